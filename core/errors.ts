/**
 * Errors a user can act on. They print as one line (`agentenv: message`) with no
 * stack trace; `-v` adds the cause. Anything else is a bug and prints its stack.
 */
export class UserError extends Error {
  constructor(
    message: string,
    /** the one thing to do about it, printed after the message */
    readonly hint?: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "UserError";
  }
}

/** A user hook or plugin threw: names the plugin and the hook, keeps the cause. */
export class PluginError extends UserError {
  constructor(
    readonly plugin: string,
    readonly hook: string,
    readonly cause: unknown,
  ) {
    super(`plugin ${plugin} failed in hook ${hook}: ${messageOf(cause)}`);
    this.name = "PluginError";
  }
}

export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** One line for the user: `message — hint`. */
export function formatUserError(error: UserError): string {
  return error.hint ? `${error.message} — ${error.hint}` : error.message;
}
