// Type declarations of herald.js, the browser client of Herald (SPEC §7).

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Server codes: bad_request, unauthorized, forbidden, not_found, too_large,
 * rate_limited, unavailable, internal (and, through Herald's proxies, the
 * application backend's own codes: lowercase [a-z0-9_]). Client codes: timeout (no reply in
 * time), disconnected (not connected, or the connection was lost before the
 * reply), transport (the socket could not be created), token (getToken
 * threw). */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "internal"
  | "timeout"
  | "disconnected"
  | "transport"
  | "token"
  | (string & {});

export class HeraldError extends Error {
  constructor(code: ErrorCode, message?: string);
  readonly name: "HeraldError";
  readonly code: ErrorCode;
}

export interface BackoffOptions {
  /** ms: the first retry waits up to this long (default 500) */
  base?: number;
  /** ms: no retry waits longer (default 20000) */
  max?: number;
}

export interface HeraldOptions {
  /** a JWT; without getToken the client cannot renew it (4001 then ends the connection for good) */
  token?: string;
  /** called for the first token, before `exp` (refresh) and after close 4001;
   * resolving to null/"" stops the client */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** the `data` of the connect command, for the server's connect proxy (the
   * application's backend): a JSON value, or a function (possibly async)
   * called before each connection. Without token and getToken the client
   * connects with no token at all: the connect proxy authenticates it (with
   * the page's cookies), or the server allows anonymous connections. */
  data?: Json | (() => Json | Promise<Json>);
  backoff?: BackoffOptions;
  /** ms a connection must stay up before the backoff starts over (default 10000) */
  stableAfter?: number;
  /** ms between client pings while connected (default 25000) */
  pingInterval?: number;
  /** ms a ping may wait for its reply before the socket counts as dead (default 10000) */
  pongTimeout?: number;
  /** ms from opening the socket to the `connected` push (default 10000) */
  connectTimeout?: number;
  /** ms publish/presence/history may wait, including for a reconnect (default 10000) */
  requestTimeout?: number;
  /** outgoing commands per second (default 150; 0 = no pacing) */
  rate?: number;
  /** outgoing burst (default 300) */
  burst?: number;
  /** a WebSocket constructor (node, tests); default globalThis.WebSocket */
  WebSocket?: new (url: string) => WebSocket;
  /** a random source in [0, 1) for the jitter (tests) */
  random?: () => number;
}

export interface ConnectedEvent {
  client: string;
  user: string;
  /** unix seconds, null for a token without exp / anonymous */
  expiresAt: number | null;
}

export interface DisconnectedEvent {
  /** the close code (1006 with reason "no reply to ping" / "connect timeout" for a dead socket) */
  code: number;
  reason: string;
  /** whether the client will reconnect by itself: not after 4003, 4001
   * without getToken, or a backend's disconnect (4500-4999) whose reason
   * does not start with "reconnect"; 1013 (the backend could not be asked)
   * is retried with backoff */
  reconnect: boolean;
  wasConnected: boolean;
  /** the server's error reply to the connect command, when it refused it
   * (the backend's code, e.g. "unauthorized", before 4003; "unavailable"
   * before 1013) */
  error?: HeraldError;
}

export interface ConnectingEvent {
  attempt: number;
  /** ms until the attempt */
  delay: number;
}

/** Who published: set by the server for a client connection's publication,
 * never taken from the data; absent for backend publications. */
export interface Publisher {
  user: string;
  client: string;
  /** the publisher's token `info` claim ({} without one) */
  info: Json;
}

export interface MessageContext {
  channel: string;
  /** position in a history channel's stream */
  offset?: number;
  /** the publishing client, as the server knows it (absent: a backend) */
  from?: Publisher;
  /** set on publications replayed by a resubscribe: whether the gap was closed */
  recovered?: boolean;
  /** true for publications replayed after a reconnect (missed while away) */
  replayed?: boolean;
}

export interface SubscribedContext {
  channel: string;
  /** false for the first subscribe, true after a reconnect or a server-side resubscribe */
  resubscribed: boolean;
  /** on a resubscribe: every missed publication was delivered (history channels only);
   * false: some are lost, reload your state (e.g. with history()) */
  recovered: boolean;
  offset?: number;
  epoch?: string;
}

export interface PresenceEvent {
  channel: string;
  client: string;
  user: string;
}

export interface UnsubscribedContext {
  channel: string;
  /** "server": removed by the backend (members API); otherwise the error code that ended it */
  reason: string;
}

export interface SubscriptionHandlers {
  onMessage?(data: Json, ctx: MessageContext): void;
  onJoin?(ev: PresenceEvent): void;
  onLeave?(ev: PresenceEvent): void;
  onSubscribed?(ctx: SubscribedContext): void;
  onUnsubscribed?(ctx: UnsubscribedContext): void;
  /** the server refused the subscription (forbidden, bad_request, too_large) */
  onError?(err: HeraldError): void;
}

export class Subscription {
  readonly channel: string;
  readonly handlers: SubscriptionHandlers;
  /** false after unsubscribe(), a refusal or a server-side removal */
  readonly active: boolean;
  /** the first subscribe's outcome */
  readonly ready: Promise<SubscribedContext>;
  unsubscribe(): void;
}

export interface ClientInfo {
  client: string;
  user: string;
  info?: Json;
}

export interface Publication {
  offset: number;
  data: Json;
  from?: Publisher;
}

export interface HistoryResult {
  publications: Publication[];
  offset: number;
  epoch: string;
}

export interface StreamPositionValue {
  offset: number;
  epoch: string;
}

export interface ServerSubscribedEvent {
  channel: string;
  resubscribed: boolean;
  recovered?: boolean;
  offset?: number;
  epoch?: string;
}

export interface HeraldEvents {
  connecting: (ev: ConnectingEvent) => void;
  connected: (ev: ConnectedEvent) => void;
  disconnected: (ev: DisconnectedEvent) => void;
  error: (err: HeraldError) => void;
  /** publications of server-joined channels that no subscribe() handles */
  message: (data: Json, ctx: MessageContext) => void;
  subscribed: (ev: ServerSubscribedEvent) => void;
  unsubscribed: (ev: UnsubscribedContext) => void;
}

export class Herald {
  /** url: "ws(s)://host/ws", "http(s)://host/ws" or a path such as "/ws" */
  constructor(url: string, options?: HeraldOptions);
  readonly url: string;
  readonly state: "disconnected" | "connecting" | "connected";
  /** the server's id of the current connection */
  readonly client: string | null;
  readonly user: string | null;
  readonly expiresAt: number | null;
  on<E extends keyof HeraldEvents>(event: E, fn: HeraldEvents[E]): () => void;
  off<E extends keyof HeraldEvents>(event: E, fn: HeraldEvents[E]): void;
  connect(): void;
  disconnect(): void;
  subscribe(channel: string, handlers?: SubscriptionHandlers): Subscription;
  subscriptions(channel: string): Subscription[];
  publish(channel: string, data: Json): Promise<{ offset?: number; local_only?: boolean }>;
  presence(channel: string): Promise<{ clients: ClientInfo[] }>;
  history(channel: string, options?: { limit?: number; since?: StreamPositionValue }): Promise<HistoryResult>;
  /** calls the backend's `method` through Herald's RPC proxy: resolves with
   * the result's `data`, rejects with a HeraldError (the backend's code,
   * not_found without an RPC proxy, unavailable, timeout, disconnected) */
  rpc<T = Json>(method: string, data?: Json): Promise<T>;
}

export default Herald;

// The client's pure logic, exported for tests and for reuse.

export function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

export class Backoff {
  constructor(options?: BackoffOptions, random?: () => number);
  attempt: number;
  next(): number;
  reset(): void;
}

export class TokenBucket {
  constructor(rate?: number, burst?: number, now?: number);
  /** 0 when a command may go at `now` (ms), else the ms to wait */
  take(now: number): number;
}

export class StreamPosition {
  offset: number | null;
  epoch: string | null;
  readonly known: boolean;
  since(): StreamPositionValue | undefined;
  subscribed(
    result: { offset?: number; epoch?: string; recovered?: boolean; publications?: Publication[] },
    wasRecovering: boolean,
  ): { recovered: boolean; publications: Publication[] };
  accept(offset?: number): boolean;
  resynced(push: { offset?: number; epoch?: string; recovered?: boolean }): boolean;
}

export function refreshDelay(expiresAt: number, now?: number, floor?: number): number;
export function tokenExpiry(token: string): number | null;
export function resolveUrl(url: string, base?: string): string;
export function shouldReconnect(code: number, hasGetToken: boolean, reason?: string): boolean;
/** does a backend's close reason (4500-4999) start with the word "reconnect"? */
export function reasonAsksReconnect(reason?: string): boolean;
