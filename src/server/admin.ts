// The operator's endpoints, under /admin: the join tokens devices are admitted with (list, add, revoke
// — revoking disconnects the devices that joined with it) and the device identities the base station
// knows (list, forget). They take their own bearer keys, never the API keys; without any they are off.
import type { Context, Hono } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import type { RequestIdVariables } from "hono/request-id";
import { z } from "zod";
import type { DeviceHub } from "../runtime/device-hub.js";
import { ApiError, errorBody } from "./errors.js";

/** What the admin endpoints control: the device hub's admission. */
export interface DeviceAdmin {
  listTokens(): Array<{ id: string; created: string; devices: string[] }>;
  /** Adds a join token (default: a new one); with the command that joins a device with it. */
  addToken(token?: string): { id: string; token: string; join: string };
  /** The names of the devices disconnected; null when there is no such token. */
  revokeToken(id: string): string[] | null;
  listDevices(): Array<{ fingerprint: string; name: string; experts: Array<[number, number]>; firstSeen: string; lastSeen: string; connected: boolean }>;
  forgetDevice(fingerprint: string): boolean;
}

/** The admin controls of a device hub; `joinCommand` gives the command that joins a device with a token. */
export function hubAdmin(hub: DeviceHub, joinCommand: (token: string) => string): DeviceAdmin {
  return {
    listTokens: () => hub.joinTokenList() ?? [],
    addToken: (token) => {
      const added = hub.addJoinToken(token);
      return { ...added, join: joinCommand(added.token) };
    },
    revokeToken: (id) => hub.revokeJoinToken(id),
    listDevices: () => hub.knownDevices(),
    forgetDevice: (fingerprint) => hub.forgetDevice(fingerprint),
  };
}

export interface AdminOptions {
  /** Bearer keys for /admin/*; none: the endpoints answer 403. */
  keys: readonly string[];
  /** The device hub's admission; undefined when the base station runs every expert itself. */
  devices?: DeviceAdmin;
}

type Env = { Variables: RequestIdVariables };

const addTokenBody = z.strictObject({ token: z.string().optional() });

/** Admin request bodies are small. */
export const adminBodyLimit = bodyLimit({ maxSize: 4096, onError: () => { throw new ApiError(413, "an admin request body is 4 KiB at most"); } });

/** An admin request's JSON body; an empty one is `empty` where given (else refused like any body that is not JSON). */
export async function readAdminJson(c: Context, empty?: unknown): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "" && empty !== undefined) return empty;
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new ApiError(415, `the request body must be JSON (content-type: application/json), not '${type.slice(0, 64) || "none"}'`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON (${(e as Error).message})`);
  }
}

/** Adds the /admin routes to `app`, whose error handler answers the ApiErrors they throw. */
export function mountAdmin(app: Hono<Env>, opts: AdminOptions): void {
  if (opts.keys.length === 0) {
    app.all("/admin/*", () => {
      throw new ApiError(403, "the admin endpoints are off: start the base station with --admin-key KEY (or DISTMOE_ADMIN_KEY)", "permission_error");
    });
    return;
  }
  const refuse = (message: string) => (c: Context<Env>) => c.json(errorBody(message, "authentication_error", undefined, c.get("requestId")), 401);
  const required = refuse("an admin key is required: Authorization: Bearer ADMIN_KEY");
  app.use("/admin/*", bearerAuth({ token: [...opts.keys], noAuthenticationHeader: { message: required }, invalidAuthenticationHeader: { message: required }, invalidToken: { message: refuse("the admin key is not valid") } }));
  const devices = (): DeviceAdmin => {
    if (!opts.devices) throw new ApiError(404, "this base station has no device port: it runs every expert itself", "not_found_error");
    return opts.devices;
  };

  app.get("/admin/tokens", (c) => c.json({ tokens: devices().listTokens() }));
  // no body at all (`curl -X POST`) asks for a new token; a body must be JSON
  app.post("/admin/tokens", adminBodyLimit, async (c) => {
    const json = await readAdminJson(c, {});
    const body = addTokenBody.safeParse(json);
    if (!body.success) throw new ApiError(400, `the body is {"token"?: string}: ${body.error.issues[0]?.message}`);
    let added: ReturnType<DeviceAdmin["addToken"]>;
    try {
      added = devices().addToken(body.data.token);
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw new ApiError(400, (e as Error).message, "invalid_request_error", { param: "token" });
    }
    return c.json(added, 201);
  });
  app.delete("/admin/tokens/:id", (c) => {
    const id = c.req.param("id");
    const disconnected = devices().revokeToken(id);
    if (disconnected === null) throw new ApiError(404, `no join token with id ${id.slice(0, 64)}`, "not_found_error");
    return c.json({ id, revoked: true, disconnected });
  });
  app.get("/admin/devices", (c) => c.json({ devices: devices().listDevices() }));
  // a fingerprint holds "/" and "+" (base64): the rest of the path is it, percent-encoded or not
  app.delete("/admin/devices/:fingerprint{.+}", (c) => {
    const fingerprint = c.req.param("fingerprint");
    if (!devices().forgetDevice(fingerprint)) throw new ApiError(404, `no known device with identity ${fingerprint.slice(0, 64)}`, "not_found_error");
    return c.json({ fingerprint, forgotten: true });
  });
}
