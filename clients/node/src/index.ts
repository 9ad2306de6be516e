// @memoryd/client: the Node/TypeScript client of memoryd.
export * from "./client";
export * from "./errors";
export * from "./messages";
export * as pb from "./gen/memoryd/v1/memory";
export { AccessMode, ConfigLevel, FlushStrategy, MessageKind, ReadView, Role } from "./gen/memoryd/v1/memory";
export type {
  AppendResponse, ContentPart, FlushResponse, GetHealthResponse, InstanceStats, ListResourcesResponse, MediaRef, Message,
  ResolveAgentResponse, ToolCall, WatchResponse,
} from "./gen/memoryd/v1/memory";
export type { Timestamp } from "./gen/google/protobuf/timestamp";
