/** Asks the routing gateway where a user's phone goes (POST /v1/route), for PhoneSim.resolveEndpoint. */

export interface RouteAnswer {
  podId: string;
  epoch: number;
  glassesWsUrl: string;
  restBaseUrl: string;
  udpHost: string;
  udpPort: number;
  ticket: string;
  ticketExpiresAt: number;
}

export class RouteError extends Error {
  constructor(readonly status: number, readonly body: unknown, readonly retryAfterS: number | null) {
    super(`route refused: HTTP ${status} ${JSON.stringify(body)}`);
  }
}

export async function route(gatewayUrl: string, token: string): Promise<RouteAnswer> {
  const res = await fetch(`${gatewayUrl.replace(/\/+$/, "")}/v1/route`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new RouteError(res.status, body, res.headers.get("retry-after") ? Number(res.headers.get("retry-after")) : null);
  return body as RouteAnswer;
}

/** A resolveEndpoint for PhoneSim that routes through the gateway before every (re)connect. */
export function gatewayResolver(gatewayUrl: string, token: string, onRoute?: (r: RouteAnswer) => void) {
  return async () => {
    const r = await route(gatewayUrl, token);
    onRoute?.(r);
    return { wsUrl: r.glassesWsUrl, restBase: r.restBaseUrl };
  };
}
