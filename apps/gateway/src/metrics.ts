/** The gateway's own metrics, on its own registry. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Router } from "@mentra-cluster/registry";

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly routes: Counter<"result">;
  readonly placement: Histogram;
  readonly redirects: Counter<"kind">;
  readonly admin: Counter<"action">;
  readonly http: Counter<"status">;

  constructor(gatewayId: string, router: Router) {
    this.registry.setDefaultLabels({ gateway: gatewayId });
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.routes = new Counter({ name: "mentra_gateway_route_requests_total", help: "Route decisions by result", labelNames: ["result"], registers });
    this.placement = new Histogram({
      name: "mentra_gateway_placement_seconds",
      help: "Time to answer a route decision",
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.redirects = new Counter({ name: "mentra_gateway_redirects_total", help: "307 redirects to an owning pod", labelNames: ["kind"], registers });
    this.admin = new Counter({ name: "mentra_gateway_admin_actions_total", help: "Admin API actions", labelNames: ["action"], registers });
    this.http = new Counter({ name: "mentra_gateway_http_requests_total", help: "HTTP requests by status class", labelNames: ["status"], registers });
    new Gauge({
      name: "mentra_gateway_pods",
      help: "Pods in the registry snapshot by state (cordoned and drain-requested pods are counted as such)",
      labelNames: ["state"],
      registers,
      collect() {
        const counts: Record<string, number> = { starting: 0, ready: 0, draining: 0, cordoned: 0 };
        for (const p of router.snapshot()) {
          const s = p.control.drainRequested ? "draining" : p.control.cordoned && p.state === "ready" ? "cordoned" : p.state;
          counts[s] = (counts[s] ?? 0) + 1;
        }
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: "mentra_gateway_snapshot_age_seconds",
      help: "Age of the pod snapshot placement reads",
      registers,
      collect() {
        this.set(router.snapshotAt ? (Date.now() - router.snapshotAt) / 1000 : -1);
      },
    });
  }
}
