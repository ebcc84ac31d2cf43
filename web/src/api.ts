// HTTP calls to the homeserver (same origin). Errors are RFC 9457 problem+json with a stable
// `code` (docs/api.md, "Errors"); they become ApiError with a sentence a person can act on.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(friendlyMessage(code, detail));
  }
}

// Codes a user of this page can meet, in words that say what to do.
const MESSAGES: Record<string, string> = {
  user_exists: "That user name is already taken. Pick another one, or log in.",
  invalid_name: "User names are 1 to 63 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit.",
  invalid_password: "Wrong user id or password.",
  registration_token_invalid: "This server needs a registration token to sign up.",
  user_not_found: "There is no user with that id.",
  invalid_target: "You cannot start a conversation with yourself.",
  connection_exists: "You already have a conversation request or connection with that user.",
  no_connection: "You are not connected with that user.",
  rate_limited: "Too many attempts. Wait a moment and try again.",
  too_many_clients: "This account has too many devices. Remove one first.",
  invalid_request: "The server did not accept the input",
  unauthenticated: "Your session ended. Log in again.",
  token_expired: "Your session ended. Log in again.",
  account_suspended: "This account is suspended.",
  queue_not_found: "A message queue of this browser is gone from the server. Reload the page and try again.",
  too_many_queues: "This browser is in as many conversations as the server allows (one message queue each). Leave one first.",
  queue_key_required: "This browser's message queue has no key yet. Reload the page to claim it.",
  group_key_required: "The server keeps this conversation sealed under a key this browser was never given, so it will not act on it. Ask a member to invite you again.",
  wrong_group_key: "The server did not accept this browser's key to this conversation: it is not the one the conversation is sealed under. Ask a member to invite you again.",
  invalid_group_key: "This browser sent a malformed key for this conversation. Reload the page and try again.",
  items_in_transit: "Messages of this conversation are still on their way to your server. Try again in a moment.",
};

function friendlyMessage(code: string, detail: string): string {
  const known = MESSAGES[code];
  if (code === "invalid_request" && detail) return `${known}: ${detail}`;
  return known ?? (detail || code);
}

export interface RequestOptions {
  json?: unknown;
  body?: Uint8Array;
  contentType?: string;
  headers?: Record<string, string>;
  auth?: boolean;
}

export class Api {
  token = "";

  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    let body: BodyInit | undefined;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers["Content-Type"] = options.contentType ?? "message/mls";
      body = options.body as Uint8Array<ArrayBuffer>;
    }
    if (options.auth !== false && this.token) headers.Authorization = `Bearer ${this.token}`;
    let resp: Response;
    try {
      resp = await fetch(path, { method, headers, body });
    } catch {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
    }
    if (!resp.ok) throw await problem(resp);
    return resp;
  }

  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return (await (await this.request(method, path, options)).json()) as T;
  }

  async bytes(method: string, path: string, options: RequestOptions = {}): Promise<Uint8Array> {
    return new Uint8Array(await (await this.request(method, path, options)).arrayBuffer());
  }
}

async function problem(resp: Response): Promise<ApiError> {
  try {
    const p = (await resp.json()) as { code?: string; detail?: string };
    return new ApiError(resp.status, p.code ?? `http_${resp.status}`, p.detail ?? "");
  } catch {
    return new ApiError(resp.status, `http_${resp.status}`, `The server answered ${resp.status}.`);
  }
}

/** A path segment (user ids contain '@', client ids '/'). */
export const seg = (value: string): string => encodeURIComponent(value);
