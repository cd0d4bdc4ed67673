/**
 * Node/V8 flags every session pod process runs with: the Dockerfile's CMD, the chart, porter.yaml,
 * `npm start`'s pod processes and the load test's own cluster use this list (test/deploy.test.ts
 * checks that the image's command line carries it).
 *
 * `--initial-old-space-size=128`: a pod's live heap is small (≈ 36 MB at 400 users) and its
 * young generation large (16 MB semi-spaces). V8 starts incremental marking whenever the room
 * left under the old-generation limit is smaller than the young generation; with its default
 * limit for a heap that small, that was true again right after every mark-compact, so the pod ran
 * a full mark-compact about every 0.5 s while reclaiming almost nothing (`--trace-gc`: 38 → 36.5
 * MB). The GC helper threads then used 85–135 ms of CPU per second at 400 users, a quarter of the
 * pod's CPU. A 128 MB floor for the limit makes the room larger than the young generation: one
 * mark-compact every minute or two, GC threads ≈ 12 ms/s, and ≈ 15–20 % less pod CPU per user at
 * 400 users (bench/RESULTS.md, "GC"). From about 600 users on, the live heap is large enough for
 * V8's own limit and the flag makes no measurable difference. It is a starting limit, not a cap:
 * the heap still grows to V8's maximum, and garbage is collected as before. V8 does not accept
 * this flag in NODE_OPTIONS, so it is on the command line.
 */
export const POD_NODE_FLAGS: readonly string[] = ["--initial-old-space-size=128"];
