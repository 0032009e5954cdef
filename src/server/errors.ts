// Errors the API answers with, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

export type ErrorType = "invalid_request_error" | "authentication_error" | "permission_error" | "not_found_error" | "rate_limit_error" | "timeout" | "unavailable" | "server_error";

/** An answer other than success, with its status; thrown anywhere in a handler, answered by the app. */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 413 | 415 | 429 | 500 | 503 | 504,
    message: string,
    readonly type: ErrorType = "invalid_request_error",
    readonly options: { param?: string; retryAfterS?: number } = {},
  ) {
    super(message);
  }
}

export function errorBody(message: string, type: ErrorType, param?: string, requestId?: string) {
  return { error: { message, type, param: param ?? null, code: null, ...(requestId ? { request_id: requestId } : {}) } };
}
