/**
 * WebSocket close codes of the notifier channel (documented in docs/channel.md; the 4xxx range is
 * the application's). A client that is closed with one of these may reconnect, except after
 * UNAUTHORIZED and VERSION, which will fail again.
 */
export const CLOSE = {
  /** The client closed, or the server closed a healthy session (unsubscribed, device stopped). */
  NORMAL: 1000,
  /** The server is shutting down. */
  GOING_AWAY: 1001,
  /** A text frame: the channel speaks binary protobuf only. */
  UNSUPPORTED_DATA: 1003,
  /** A frame that does not decode as a ClientFrame (DM_ERR_CHANNEL_MALFORMED). */
  INVALID_PAYLOAD: 1007,
  /** A frame above Welcome.max_frame_bytes (sent by `ws` itself). */
  TOO_BIG: 1009,
  /** A well-formed frame that breaks the protocol: not Hello first, a second Hello, an unknown,
   * duplicate or foreign acknowledgement, a refusal of a blockable range. */
  PROTOCOL: 4000,
  /** No protocol version in common. */
  VERSION: 4001,
  /** No Hello within the hello timeout. */
  HELLO_TIMEOUT: 4002,
  /** Missing or unknown token. */
  UNAUTHORIZED: 4401,
  /** Evicted: an invalidation, release or young query was not answered within the deadline. */
  DEADLINE: 4408,
  /** Missed heartbeats (no pong for two intervals). */
  HEARTBEAT: 4409,
  /** Message rate or pending-request limit exceeded. */
  RATE_LIMIT: 4429,
  /** The client does not read: its send queue passed the limit. */
  SLOW_CONSUMER: 4503,
} as const;

export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];
