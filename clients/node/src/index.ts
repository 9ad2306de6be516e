// @memoryd/client: the Node/TypeScript client of memoryd.
export * from "./client";
export * from "./errors";
export * as pb from "./gen/memoryd/v1/memory";
export { AccessMode, ConfigLevel, FlushStrategy, MessageKind, ReadView, Role } from "./gen/memoryd/v1/memory";
export type {
  AppendResponse, FlushResponse, GetHealthResponse, InstanceStats, ListResourcesResponse, Message,
  ResolveAgentResponse, WatchResponse,
} from "./gen/memoryd/v1/memory";
export type { Timestamp } from "./gen/google/protobuf/timestamp";
