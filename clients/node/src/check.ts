// Client-side checks of request values: refused with InvalidArgumentError naming the field,
// before anything is sent, so nothing is mangled by the encoder or half-stored.
import { status } from "@grpc/grpc-js";
import { InvalidArgumentError } from "./errors";

export const UINT32_MAX = 2 ** 32 - 1;
export const INT32_MAX = 2 ** 31 - 1;
const UINT64_MAX = 2n ** 64n - 1n;
// A UTF-16 surrogate without its pair: protobuf would silently send U+FFFD instead.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function invalid(field: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(status.INVALID_ARGUMENT, `${field}: ${why} (refused by the client, not sent)`);
}

/** A uint32 request field: an integer in 0..2^32-1 (else the encoder fails with INTERNAL). */
export function checkUint32(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > UINT32_MAX) {
    throw invalid(field, `must be an integer in 0..${UINT32_MAX}, got ${String(v)}`);
  }
  return v;
}

/** A uint64 request field: a number or bigint, integral, in 0..2^64-1. */
export function checkUint64(field: string, v: unknown): bigint {
  const ok = (typeof v === "number" && Number.isSafeInteger(v)) || typeof v === "bigint";
  if (!ok || BigInt(v as number | bigint) < 0n || BigInt(v as number | bigint) > UINT64_MAX) {
    throw invalid(field, `must be an integer in 0..2^64-1, got ${String(v)}`);
  }
  return BigInt(v as number | bigint);
}

/** A string field: a string of valid Unicode (protobuf strings are UTF-8). */
export function checkText(field: string, v: unknown): string {
  if (typeof v !== "string") throw invalid(field, `must be a string, got ${v === null ? "null" : typeof v}`);
  if (LONE_SURROGATE.test(v)) throw invalid(field, "is not valid Unicode (a lone UTF-16 surrogate)");
  return v;
}

/** A plain object (not null, not an array). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}
