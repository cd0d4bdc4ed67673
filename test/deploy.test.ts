/**
 * Deployment artefacts (deploy/, helm/mentra-cluster/), checked for real without helm or a cluster:
 *
 * - values.yaml validates against values.schema.json (ajv), deliberately wrong values are refused,
 *   every `.Values.…` the templates read exists, the YAML and JSON files parse, the chart's
 *   PrometheusRule is deploy/prometheus-rules.yaml with the values' thresholds, the HPA and the KEDA
 *   ScaledObject (rendered by a small emulation of the Go template functions they use) carry the
 *   values' targets (event-loop utilisation as a quantity, 0.75 → "750m"), the chart ships
 *   deploy/grafana-dashboard.json unchanged, and every env var the chart sets is one the apps read;
 * - every metric name in the adapter rules, the KEDA and Porter queries, the alert rules and the
 *   dashboard is exported by a live pod or gateway (scraped here), so a renamed metric fails CI;
 * - the image's command line, parsed from deploy/Dockerfile (exec form, minus tini), runs with the
 *   chart's environment on a real Redis: the pod answers /livez and /readyz (also under its ingress
 *   path /p/<podId>/), registers the URLs the chart wires in, and on SIGTERM drains and exits 0; the
 *   gateway (the chart's command) sees it, routes to it, and exits 0 on SIGTERM; the operator drain
 *   documented in docs/deploy.md (`mentra-cluster drain`, the CLI in the image) drains a second pod,
 *   which exits 0.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { parse as parseYaml, parseAllDocuments, stringify as stringifyYaml } from "yaml";
import { Gateway, loadGatewayConfig } from "@mentra-cluster/gateway";
import { MemoryAssignmentStore, MemoryPodRegistry } from "@mentra-cluster/registry";
import { mintUserToken } from "@mentra-cluster/protocol";
import { POD_NODE_FLAGS } from "@mentra-cluster/pod/node-flags";
import { eventually, startTestPod } from "./helpers/pod.ts";
import { startRedis, type RedisHandle } from "./helpers/redis.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DEPLOY = join(ROOT, "deploy");
const CHART = join(ROOT, "helm/mentra-cluster");
const TEMPLATES = join(CHART, "templates");
const read = (p: string) => readFileSync(p, "utf8");

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

const values = parseYaml(read(join(CHART, "values.yaml"))) as Obj;
const schema = JSON.parse(read(join(CHART, "values.schema.json"))) as Obj;

function get(obj: Json, path: string): Json | undefined {
  let cur: Json | undefined = obj;
  for (const k of path.split(".")) {
    if (!isObj(cur) || !(k in cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}
function withValue(path: string, v: Json): Obj {
  const copy = structuredClone(values);
  const keys = path.split(".");
  let cur = copy;
  for (const k of keys.slice(0, -1)) cur = cur[k] as Obj;
  cur[keys.at(-1)!] = v;
  return copy;
}
const num = (path: string) => {
  const v = get(values, path);
  assert.equal(typeof v, "number", `values.${path} is a number`);
  return v as number;
};
const str = (path: string) => {
  const v = get(values, path);
  assert.equal(typeof v, "string", `values.${path} is a string`);
  return v as string;
};

// ---------------------------------------------------------------- values and schema

test("values.yaml validates against values.schema.json; wrong values are refused", () => {
  const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
  const validate = ajv.compile(schema);
  assert.ok(validate(values), `values.yaml: ${ajv.errorsText(validate.errors)}`);

  // Helm validates the user's values merged onto the defaults: one wrong value each.
  const wrong: [string, Json, string][] = [
    ["gateway.replicas", 1, "/gateway/replicas"],
    ["autoscaling.mode", "cpu", "/autoscaling/mode"],
    ["udp.mode", "nodePort", "/udp/mode"],
    ["pod.drainDeadlineMs", "25s", "/pod/drainDeadlineMs"],
    ["pod.maxSesions", 500, "/pod"],
    ["ingress.host", "https://cloud.example.com/", "/ingress/host"],
    ["ingress.podTimeoutSeconds", 60, "/ingress/podTimeoutSeconds"],
    ["redis.url", "redis://managed:6379", "/redis/url"], // with the in-chart Redis still enabled
    ["monitoring.kind", "Prometheus", "/monitoring/kind"],
    ["udp.port", 80, "/udp/port"],
    ["secrets", "my-secret", "/secrets"],
    ["autoscaling.targetEventLoopUtilization", 0, "/autoscaling/targetEventLoopUtilization"],
    ["autoscaling.targetEventLoopUtilization", 75, "/autoscaling/targetEventLoopUtilization"],
    ["autoscaling.targetEventLoopUtilization", "750m", "/autoscaling/targetEventLoopUtilization"],
    ["alerts.eluWarning", 1.2, "/alerts/eluWarning"],
  ];
  for (const [path, v, where] of wrong) {
    assert.equal(validate(withValue(path, v)), false, `${path}=${JSON.stringify(v)} must be refused`);
    assert.ok(
      validate.errors!.some((e) => e.instancePath === where || e.instancePath.startsWith(`${where}/`)),
      `${path}: errors at ${where}, got ${ajv.errorsText(validate.errors)}`,
    );
  }
  // Legitimate alternatives pass.
  const managed = withValue("redis.embedded", { ...(values.redis as Obj).embedded as Obj, enabled: false });
  (managed.redis as Obj).url = "rediss://default:pw@redis.example.com:6380";
  assert.ok(validate(managed), ajv.errorsText(validate.errors));
  assert.ok(validate(withValue("udp.mode", "hostPort")), ajv.errorsText(validate.errors));
  assert.ok(validate(withValue("autoscaling.mode", "keda")), ajv.errorsText(validate.errors));

  // The grace period covers preStop + the drain deadline + shutdown (the chart refuses otherwise).
  assert.ok(num("pod.terminationGracePeriodSeconds") * 1000 > num("pod.preStopSleepSeconds") * 1000 + num("pod.drainDeadlineMs") + 5000);
  assert.match(read(join(TEMPLATES, "_helpers.tpl")), /terminationGracePeriodSeconds[\s\S]*drainDeadlineMs[\s\S]*fail/);
});

test("every .Values reference in the chart's templates exists in values.yaml", () => {
  const missing: string[] = [];
  let refs = 0;
  for (const f of readdirSync(TEMPLATES)) {
    const text = read(join(TEMPLATES, f));
    for (const m of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      refs++;
      const path = m[1]!.slice(1);
      if (get(values, path) === undefined) missing.push(`${f}: .Values.${path}`);
    }
  }
  assert.ok(refs > 50, `found only ${refs} references`);
  assert.deepEqual(missing, []);
});

test("deploy/ YAML, Chart.yaml and values.yaml parse; the dashboards parse and the chart ships deploy's", () => {
  const yamls = readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(yamls.length >= 3, `deploy/ YAML files: ${yamls.join(", ")}`);
  for (const f of [...yamls.map((y) => join(DEPLOY, y)), join(CHART, "Chart.yaml"), join(CHART, "values.yaml")]) {
    for (const doc of parseAllDocuments(read(f))) assert.deepEqual(doc.errors, [], `${f}: ${doc.errors.join("; ")}`);
  }
  const chart = parseYaml(read(join(CHART, "Chart.yaml"))) as Obj;
  assert.equal(chart.apiVersion, "v2");
  assert.equal(chart.name, "mentra-cluster");

  const dashboardText = read(join(DEPLOY, "grafana-dashboard.json"));
  const dashboard = JSON.parse(dashboardText) as Obj;
  assert.ok(Array.isArray(dashboard.panels) && dashboard.panels.length > 10);
  assert.equal(read(join(CHART, "dashboards/mentra-cluster.json")), dashboardText, "helm/mentra-cluster/dashboards/mentra-cluster.json must be a copy of deploy/grafana-dashboard.json");
  assert.match(read(join(TEMPLATES, "grafana-dashboard.yaml")), /\.Files\.Get "dashboards\/mentra-cluster\.json"/);
});

/** The chart's PrometheusRule body with `{{ .Values.… }}` filled from values.yaml (or `vals`) and {{`raw`}} unwrapped. */
function renderRuleTemplate(vals: Obj = values): Obj {
  const text = read(join(TEMPLATES, "prometheusrule.yaml"));
  const lines = text.split("\n");
  const start = lines.indexOf("spec:");
  const end = lines.lastIndexOf("{{- end }}");
  assert.ok(start > 0 && end > start, "prometheusrule.yaml: spec: … {{- end }}");
  let body = lines.slice(start + 1, end).join("\n");
  body = body.replace(/\{\{ \.Values\.([A-Za-z0-9_.]+) \}\}/g, (_m, path: string) => {
    const v = get(vals, path);
    assert.ok(typeof v === "number" || typeof v === "string", `values.${path}`);
    return String(v);
  });
  assert.doesNotMatch(body.replace(/\{\{`[\s\S]*?`\}\}/g, ""), /\{\{/, "only .Values references and raw strings in the rule body");
  body = body.replace(/\{\{`([\s\S]*?)`\}\}/g, "$1");
  return parseYaml(body.split("\n").map((l) => l.replace(/^ {2}/, "")).join("\n")) as Obj;
}

test("the chart's PrometheusRule is deploy/prometheus-rules.yaml with the thresholds from values", () => {
  const plain = parseYaml(read(join(DEPLOY, "prometheus-rules.yaml"))) as Obj;
  assert.deepEqual(renderRuleTemplate(), { groups: plain.groups });
  const alerts = (plain.groups as Obj[]).flatMap((g) => g.rules as Obj[]).filter((r) => r.alert).map((r) => r.alert);
  for (const a of ["MentraEventLoopLagHigh", "MentraEventLoopBusy", "MentraSessionsOverCapacityWarning", "MentraPodMissingFromRegistry", "MentraDrainPastDeadline", "MentraDrainHitDeadline", "MentraUnhandledRejections"]) {
    assert.ok(alerts.includes(a), `alert ${a}`);
  }

  // The thresholds come from values (not copied into the template): another value renders another
  // threshold, and deploy's defaults are values.yaml's.
  const rule = (groups: Json, name: string) => (groups as Obj[]).flatMap((g) => g.rules as Obj[]).find((r) => r.alert === name)!;
  const busy = rule(plain.groups, "MentraEventLoopBusy");
  assert.match(busy.expr as string, /avg_over_time\(mentra_event_loop_utilization\[5m\]\)\) > ([0-9.]+)$/);
  assert.equal(Number(/> ([0-9.]+)$/.exec(busy.expr as string)![1]), num("alerts.eluWarning"), "deploy's MentraEventLoopBusy threshold is alerts.eluWarning");
  assert.equal(busy.for, "5m");
  assert.equal((busy.labels as Obj).severity, "warning");
  assert.match((busy.annotations as Obj).description as string, /transcripts[\s\S]*lag p99 looks fine/);
  for (const [path, name, v] of [["alerts.eluWarning", "MentraEventLoopBusy", 0.8], ["alerts.sessionsWarning", "MentraSessionsOverCapacityWarning", 123]] as const) {
    const rendered = rule(renderRuleTemplate(withValue(path, v)).groups!, name);
    assert.ok((rendered.expr as string).endsWith(`> ${v}`), `${name} follows values.${path}: ${rendered.expr}`);
  }
  // Warnings sit above the autoscaling targets (the HPA acts first); the ELU warning at most the placement cap.
  assert.ok(num("alerts.eluWarning") > num("autoscaling.targetEventLoopUtilization"), "alerts.eluWarning above the ELU target");
  assert.ok(num("alerts.eluWarning") <= num("pod.eluCap"), "alerts.eluWarning at most pod.eluCap");
  assert.ok(num("alerts.sessionsWarning") > num("autoscaling.targetSessionsPerPod"), "alerts.sessionsWarning above the sessions target");
});

// ---------------------------------------------------------------- autoscaling, rendered

/**
 * A value in a Go template as Helm has it: numbers from values.yaml are float64, number literals in
 * the template are int (or float64 with a point), so `0.75 | int` is 0 here as in Helm.
 */
type GoVal = { t: "int" | "float"; v: number } | { t: "string"; v: string } | { t: "nil" };
const goStr = (v: string): GoVal => ({ t: "string", v });

/** Go's %v of a float64 (shortest digits; exponent form below 1e-4 and from 1e6 on): 0.75, 450, 1e+06. */
function goFloat(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const [mant, e] = x.toExponential().split("e") as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= 6) return `${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return String(x);
}
/** sprig's strval / fmt's %v. */
function goString(x: GoVal): string {
  if (x.t === "string") return x.v;
  if (x.t === "nil") return "<nil>";
  return x.t === "int" ? String(x.v) : goFloat(x.v);
}
const goNum = (x: GoVal): number => {
  assert.ok(x.t === "int" || x.t === "float", `a number, got ${JSON.stringify(x)}`);
  return x.v;
};
function goPrintf(format: string, args: GoVal[]): string {
  let i = 0;
  return format.replace(/%([%dsvq])/g, (_m, verb: string) => {
    if (verb === "%") return "%";
    const a = args[i++];
    assert.ok(a, `printf ${JSON.stringify(format)}: missing argument`);
    if (verb === "d") return a.t === "int" ? String(a.v) : `%!d(${a.t === "float" ? "float64" : a.t}=${goString(a)})`;
    if (verb === "q") return JSON.stringify(goString(a));
    return goString(a);
  });
}

/** The sprig and Helm functions the chart's autoscaling template uses, with their Go semantics. */
const GO_FUNCS: Record<string, (...args: GoVal[]) => GoVal> = {
  // cast.ToInt: float64 truncates; a string must be an integer ("0.75" is an error, so 0).
  int: (x) => ({ t: "int", v: x.t === "string" ? (/^-?\d+(\.0*)?$/.test(x.v) ? Math.trunc(Number(x.v)) : 0) : x.t === "nil" ? 0 : Math.trunc(x.v) }),
  quote: (...xs) => goStr(xs.filter((x) => x.t !== "nil").map((x) => JSON.stringify(goString(x))).join(" ")),
  // Plain float64 multiplication (older sprig; newer sprig multiplies decimals, which is never less exact).
  mulf: (a, ...bs) => ({ t: "float", v: bs.reduce((acc, b) => acc * goNum(b), goNum(a)) }),
  round: (a, p, roundOn = { t: "float", v: 0.5 }) => {
    const pow = 10 ** goNum(p);
    const digit = pow * goNum(a);
    const frac = digit - Math.trunc(digit);
    return { t: "float", v: (frac >= goNum(roundOn) ? Math.ceil(digit) : Math.floor(digit)) / pow };
  },
  printf: (format, ...args) => goStr(goPrintf(goString(format), args)),
  toYaml: (x) => {
    assert.equal(x.t, "string", "toYaml of a values subtree");
    return goStr(x.v);
  },
  nindent: (n, s) => goStr("\n" + goString(s).split("\n").map((l) => " ".repeat(goNum(n)) + l).join("\n")),
  include: (name) => {
    assert.equal(goString(name), "mentra-cluster.labels", "include: only the labels helper is stubbed");
    return goStr("app.kubernetes.io/name: mentra-cluster\napp.kubernetes.io/instance: mentra-cluster");
  },
};

/**
 * Renders a template body (no if/range/with): each action is a pipeline of .Values paths, .Release
 * fields, $variables, literals, parentheses and GO_FUNCS; `$x := …` assigns; {{- and -}} trim.
 */
function renderGoTemplate(body: string, vals: Obj, vars: Record<string, string>): string {
  const release: Record<string, string> = { Name: "mentra-cluster", Namespace: "mentra" };
  const evaluate = (action: string): GoVal => {
    const tokens = [...action.matchAll(/\s*(\(|\)|\||:=|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|\$[A-Za-z0-9_]+|\.[A-Za-z0-9_.]*|[A-Za-z][A-Za-z0-9_]*)/gy)].map((m) => m[1]!);
    assert.equal(tokens.join("").replace(/\s/g, ""), action.replace(/\s/g, ""), `tokenised all of {{ ${action} }}`);
    let i = 0;
    const peek = () => tokens[i];
    const operand = (): GoVal => {
      const t = tokens[i++];
      assert.ok(t !== undefined, `{{ ${action} }}: operand expected`);
      if (t === "(") {
        const v = pipeline();
        assert.equal(tokens[i++], ")", `{{ ${action} }}: )`);
        return v;
      }
      if (t.startsWith('"')) return goStr(JSON.parse(t) as string);
      if (/^-?\d/.test(t)) return { t: t.includes(".") ? "float" : "int", v: Number(t) };
      if (t.startsWith("$")) {
        assert.ok(t.slice(1) in vars, `{{ ${action} }}: ${t} is defined`);
        return goStr(vars[t.slice(1)]!);
      }
      if (t === ".") return { t: "nil" };
      if (t.startsWith(".Release.")) return goStr(release[t.slice(9)]!);
      assert.ok(t.startsWith(".Values."), `{{ ${action} }}: unsupported operand ${t}`);
      const v = get(vals, t.slice(8));
      assert.ok(v !== undefined, `${t} exists`);
      if (typeof v === "number") return { t: "float", v };
      if (typeof v === "string") return goStr(v);
      return goStr(stringifyYaml(v).trimEnd()); // only toYaml takes a subtree
    };
    const command = (piped?: GoVal): GoVal => {
      const t = peek()!;
      if (/^[A-Za-z]/.test(t)) {
        const fn = GO_FUNCS[t];
        assert.ok(fn, `{{ ${action} }}: function ${t} is emulated`);
        i++;
        const args: GoVal[] = [];
        while (i < tokens.length && peek() !== "|" && peek() !== ")") args.push(operand());
        return fn(...(piped ? [...args, piped] : args));
      }
      assert.equal(piped, undefined, `{{ ${action} }}: only a function takes a piped value`);
      return operand();
    };
    const pipeline = (): GoVal => {
      let v = command();
      while (peek() === "|") {
        i++;
        v = command(v);
      }
      return v;
    };
    if (tokens[1] === ":=") {
      i = 2;
      vars[tokens[0]!.slice(1)] = goString(pipeline());
      return goStr("");
    }
    const v = pipeline();
    assert.equal(i, tokens.length, `{{ ${action} }}: parsed to the end`);
    return v;
  };
  const trimmed = body.replace(/\s*\{\{-\s/g, "{{ ").replace(/\s-\}\}\s*/g, " }}");
  return trimmed.replace(/\{\{ ([\s\S]*?) \}\}/g, (_m, action: string) => goString(evaluate(action.trim())));
}

/** templates/autoscaling.yaml rendered for autoscaling.mode = hpa or keda, parsed. */
function renderScaling(vals: Obj): Obj {
  const text = read(join(TEMPLATES, "autoscaling.yaml"));
  const m = /^\{\{- \$fullname := include "mentra-cluster\.fullname" \. \}\}\n\{\{- \$podSet := include "mentra-cluster\.podSet" \. \}\}\n\{\{- if eq \.Values\.autoscaling\.mode "hpa" \}\}\n([\s\S]*)\{\{- else if eq \.Values\.autoscaling\.mode "keda" \}\}\n([\s\S]*)\{\{- end \}\}\n?$/.exec(text);
  assert.ok(m, "autoscaling.yaml: $fullname, $podSet, then if hpa … else if keda … end");
  const mode = get(vals, "autoscaling.mode");
  assert.ok(mode === "hpa" || mode === "keda", `autoscaling.mode ${String(mode)}`);
  const body = mode === "hpa" ? m[1]! : m[2]!;
  return parseYaml(renderGoTemplate(body, vals, { fullname: "mentra-cluster", podSet: "mentra-cluster-pod" })) as Obj;
}

/** A Kubernetes quantity's value (decimal, optionally with a decimal SI suffix). */
function quantity(q: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E)?$/.exec(q);
  assert.ok(m, `${q} is a decimal Kubernetes quantity`);
  if (m[2] === "m") return Number(m[1]) / 1000;
  return Number(m[1]) * ({ k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 }[m[2] ?? ""] ?? 1);
}

test("the emulated Go template functions behave as in Helm", () => {
  const r = (action: string, vals: Obj = {}) => renderGoTemplate(`{{ ${action} }}`, vals, {});
  assert.equal(r(".Values.x | int | quote", { x: 0.75 }), '"0"', "int truncates");
  assert.equal(r(".Values.x | quote", { x: 0.75 }), '"0.75"');
  assert.equal(r(".Values.x", { x: 1000000 }), "1e+06");
  assert.equal(r(".Values.x | int", { x: 1000000 }), "1000000");
  assert.equal(r('printf "%dm" .Values.x', { x: 750 }), "%!d(float64=750)m", "%d takes an int, not a float64");
  assert.equal(r("round (mulf .Values.x 1000) 0 | int", { x: 0.7505 }), "751");
  assert.equal(r("round 749.49 0 | int"), "749");
  assert.equal(renderGoTemplate("a\n  {{- $s := printf \"%s-%q\" \"x\" .Release.Namespace }}\nb: { {{- $s -}} }", {}, {}), 'a\nb: {x-"mentra"}');
});

test("autoscaling renders the values' targets: lag, sessions and event-loop utilisation (as a quantity) for the HPA and KEDA", () => {
  const elu = num("autoscaling.targetEventLoopUtilization");
  assert.ok(elu > 0 && elu < 1, "a fraction");
  assert.equal(elu, 0.75);

  const hpaMetrics = (vals: Obj) => {
    const hpa = renderScaling(vals);
    assert.equal(hpa.kind, "HorizontalPodAutoscaler");
    assert.equal(get(hpa, "spec.minReplicas"), get(vals, "autoscaling.minReplicas"));
    assert.deepEqual(get(hpa, "spec.behavior"), get(vals, "autoscaling.behavior"));
    const out: Record<string, string> = {};
    for (const m of get(hpa, "spec.metrics") as Obj[]) {
      assert.equal(m.type, "Pods");
      assert.equal(get(m, "pods.target.type"), "AverageValue");
      const v = get(m, "pods.target.averageValue");
      assert.equal(typeof v, "string", "averageValue is a quoted quantity");
      out[get(m, "pods.metric.name") as string] = v as string;
    }
    return out;
  };
  assert.deepEqual(hpaMetrics(values), {
    mentra_event_loop_lag_p99_2m_ms: String(num("autoscaling.targetLagP99Ms")),
    mentra_user_sessions: String(num("autoscaling.targetSessionsPerPod")),
    mentra_event_loop_utilization_2m: `${Math.round(elu * 1000)}m`,
  });
  assert.equal(hpaMetrics(values).mentra_event_loop_utilization_2m, "750m");
  // Other fractions render as their value in thousandths, not truncated.
  for (const v of [0.7, 0.57, 0.6, 0.29, 0.333, 0.9, 1]) {
    const q = hpaMetrics(withValue("autoscaling.targetEventLoopUtilization", v)).mentra_event_loop_utilization_2m!;
    assert.equal(quantity(q), v, `targetEventLoopUtilization ${v} → ${q}`);
  }

  const keda = renderScaling(withValue("autoscaling.mode", "keda"));
  assert.equal(keda.kind, "ScaledObject");
  const triggers = Object.fromEntries((get(keda, "spec.triggers") as Obj[]).map((t) => [t.name as string, t]));
  assert.deepEqual(Object.keys(triggers).sort(), ["event-loop-lag-p99", "event-loop-utilization", "sessions-per-pod"]);
  for (const t of Object.values(triggers)) {
    assert.equal(t.type, "prometheus");
    assert.equal(get(t, "metadata.ignoreNullValues"), "false", `${t.name}: no data holds the replica count`);
    assert.equal(get(t, "metadata.serverAddress"), str("autoscaling.keda.prometheusServerAddress"));
    assert.match(get(t, "metadata.query") as string, /\{namespace="mentra", pod=~"mentra-cluster-pod-\[0-9\]\+"\}/);
  }
  const eluTrigger = triggers["event-loop-utilization"]!;
  assert.equal(eluTrigger.metricType, "Value", "an average over pods, like the lag trigger");
  assert.equal(get(triggers["event-loop-lag-p99"]!, "metricType"), "Value");
  assert.match(get(eluTrigger, "metadata.query") as string, /^avg\(max by \(pod\) \(avg_over_time\(mentra_event_loop_utilization\{[^}]*\}\[2m\]\)\)\)$/);
  // KEDA parses the threshold as a decimal number (strconv.ParseFloat), not as a quantity.
  assert.equal(get(eluTrigger, "metadata.threshold"), String(elu));
  for (const v of [0.7, 0.57, 1]) {
    const kedaValues = withValue("autoscaling.mode", "keda");
    (kedaValues.autoscaling as Obj).targetEventLoopUtilization = v;
    const t = (get(renderScaling(kedaValues), "spec.triggers") as Obj[]).find((x) => x.name === "event-loop-utilization")!;
    assert.equal(Number(get(t, "metadata.threshold")), v, `KEDA threshold for ${v}: ${String(get(t, "metadata.threshold"))}`);
  }
  assert.equal(get(triggers["sessions-per-pod"]!, "metadata.threshold"), String(num("autoscaling.targetSessionsPerPod")));
  assert.equal(get(triggers["event-loop-lag-p99"]!, "metadata.threshold"), String(num("autoscaling.targetLagP99Ms")));

  // The adapter serves the ELU metric per pod as the 2-minute average, with the other rules' resources.
  const adapter = parseYaml(read(join(DEPLOY, "prometheus-adapter-rules.yaml"))) as Obj;
  const rules = (adapter.rules as Obj).custom as Obj[];
  const eluRule = rules.find((r) => get(r, "name.as") === "mentra_event_loop_utilization_2m");
  assert.ok(eluRule, "an adapter rule serves mentra_event_loop_utilization_2m");
  assert.match(eluRule.seriesQuery as string, /^mentra_event_loop_utilization\{namespace!="",pod!=""\}$/);
  assert.match(eluRule.metricsQuery as string, /avg_over_time\(<<\.Series>>\{<<\.LabelMatchers>>\}\[2m\]\)/);
  assert.match(eluRule.metricsQuery as string, /by \(<<\.GroupBy>>\)/);
  for (const r of rules) assert.deepEqual(r.resources, rules[0]!.resources, `${get(r, "name.as")}: same resource overrides`);
});

test("the dashboards' event-loop utilisation and sessions panels draw the values' targets and warnings", () => {
  const dashboard = JSON.parse(read(join(DEPLOY, "grafana-dashboard.json"))) as Obj;
  const panels = dashboard.panels as Obj[];
  const steps = (p: Obj) => (get(p, "fieldConfig.defaults.thresholds.steps") as Obj[]).map((s) => s.value);
  const elu = panels.find((p) => dashboardQueries(p).some((q) => /avg_over_time\(mentra_event_loop_utilization\{[^}]*\}\[2m\]\)/.test(q)));
  assert.ok(elu, "a panel shows the 2-minute event-loop utilisation per pod");
  for (const v of [num("autoscaling.targetEventLoopUtilization"), num("alerts.eluWarning")]) assert.ok(steps(elu).includes(v), `ELU panel line at ${v}`);
  const sessions = panels.find((p) => dashboardQueries(p).some((q) => /^mentra_user_sessions\{/.test(q)));
  assert.ok(sessions, "a panel shows sessions per pod");
  for (const v of [num("autoscaling.targetSessionsPerPod"), num("alerts.sessionsWarning")]) assert.ok(steps(sessions).includes(v), `sessions panel line at ${v}`);
});

// ---------------------------------------------------------------- commands and env

interface Dockerfile {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  user: string;
}

/** The final stage's ENTRYPOINT, CMD (exec form only: a shell form would make sh PID 1), ENV, USER. */
function parseDockerfile(): Dockerfile {
  const text = read(join(DEPLOY, "Dockerfile")).replace(/\\\r?\n/g, " ");
  const out: Dockerfile = { entrypoint: [], cmd: [], env: {}, user: "root" };
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith("#")) continue;
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === "FROM") Object.assign(out, { entrypoint: [], cmd: [], env: {}, user: "root" });
    else if (op === "ENTRYPOINT" || op === "CMD") {
      let arr: unknown = null;
      try {
        arr = JSON.parse(args);
      } catch {
        // shell form: reported below
      }
      assert.ok(Array.isArray(arr) && arr.every((a) => typeof a === "string"), `${op} must be in exec form: ${args}`);
      if (op === "ENTRYPOINT") out.entrypoint = arr as string[];
      else out.cmd = arr as string[];
    } else if (op === "ENV") {
      for (const kv of args.split(/\s+/)) {
        const i = kv.indexOf("=");
        assert.ok(i > 0, `ENV in key=value form: ${args}`);
        out.env[kv.slice(0, i)] = kv.slice(i + 1);
      }
    } else if (op === "USER") out.user = args;
  }
  return out;
}

/** The container's argv without its init (tini/dumb-init and their options up to "--"). */
function containerArgv(d: Dockerfile, cmd = d.cmd): string[] {
  let entry = d.entrypoint;
  if (entry.length && ["tini", "dumb-init", "docker-init"].includes(basename(entry[0]!))) {
    entry = entry.slice(1);
    while (entry.length && entry[0]!.startsWith("-")) {
      const flag = entry.shift();
      if (flag === "--") break;
    }
  }
  return [...entry, ...cmd];
}

function templateArgs(file: string): string[] {
  const m = /^\s*args: (\[.*\])\s*$/m.exec(read(join(TEMPLATES, file)));
  assert.ok(m, `${file}: args: [...] on one line`);
  return JSON.parse(m[1]!) as string[];
}

test("one image: the Dockerfile, the chart and porter.yaml run the same commands; non-root; tini as PID 1", () => {
  const d = parseDockerfile();
  assert.ok(/^[1-9]\d*(:\d+)?$/.test(d.user), `USER must be a numeric non-root uid, got ${d.user}`);
  assert.ok(["tini", "dumb-init", "docker-init"].includes(basename(d.entrypoint[0] ?? "")), `ENTRYPOINT is an init: ${d.entrypoint}`);
  const pod = containerArgv(d);
  assert.deepEqual(pod, ["node", ...POD_NODE_FLAGS, "--import", "tsx", "apps/pod/src/main.ts"], "the pod runs with POD_NODE_FLAGS");
  assert.deepEqual(templateArgs("pod-statefulset.yaml"), d.cmd, "the chart's pod args are the image's CMD");
  const gatewayArgs = templateArgs("gateway.yaml");
  assert.deepEqual(gatewayArgs, ["node", "--import", "tsx", "apps/gateway/src/main.ts"]);
  const porter = parseYaml(read(join(DEPLOY, "porter.yaml"))) as Obj;
  const run = Object.fromEntries((porter.services as Obj[]).map((s) => [s.name as string, s.run as string]));
  assert.equal(run.pod, d.cmd.join(" "));
  assert.equal(run.gateway, gatewayArgs.join(" "));
  for (const s of porter.services as Obj[]) {
    assert.deepEqual({ enabled: (s.metricsScraping as Obj).enabled, path: (s.metricsScraping as Obj).path }, { enabled: true, path: "/metrics" }, `porter ${s.name}: metrics scraping on /metrics`);
  }
});

/** Names of the env entries a template (and the shared env helper it includes) sets. */
function templateEnvNames(file: string): Set<string> {
  // Env entries are the only upper-case "- name:" items (ports, volumes and containers are lower-case).
  const grab = (text: string) => [...text.matchAll(/^\s*- name: ([A-Z][A-Z0-9_]*)\s*$/gm)].map((m) => m[1]!);
  const helper = /define "mentra-cluster\.clusterEnv"[\s\S]*?\{\{- end -\}\}/.exec(read(join(TEMPLATES, "_helpers.tpl")))![0];
  return new Set([...grab(read(join(TEMPLATES, file))), ...grab(helper)]);
}
/** Only there for `$(NAME)` expansion inside other values (udp.advertiseHost placeholders). */
const EXPANSION_ONLY = new Set(["NODE_NAME", "HOST_IP"]);

test("every env var the chart sets is one the pod or gateway reads", () => {
  const podSources = read(join(ROOT, "apps/pod/src/config.ts")) + read(join(ROOT, "packages/directory/src/env.ts"));
  const gatewaySources = read(join(ROOT, "apps/gateway/src/config.ts"));
  const unread = (names: Set<string>, src: string) => [...names].filter((n) => !EXPANSION_ONLY.has(n) && n !== "NODE_ENV" && !new RegExp(`env\\.${n}\\b|"${n}"`).test(src));
  const podNames = templateEnvNames("pod-statefulset.yaml");
  for (const n of ["POD_ID", "PUBLIC_URL_TEMPLATE", "UDP_HOST", "UDP_PORT", "REDIS_URL", "JWT_SECRET", "ROUTE_TICKET_KEY", "ADMIN_TOKEN", "MONGODB_URL", "DRAIN_DEADLINE_MS"]) assert.ok(podNames.has(n), `pod env ${n}`);
  assert.deepEqual(unread(podNames, podSources), []);
  const gwNames = templateEnvNames("gateway.yaml");
  for (const n of ["GATEWAY_ID", "REDIS_URL", "JWT_SECRET", "ROUTE_TICKET_KEY", "ADMIN_TOKEN"]) assert.ok(gwNames.has(n), `gateway env ${n}`);
  assert.deepEqual(unread(gwNames, gatewaySources), []);
});

// ---------------------------------------------------------------- metric names

/** Metric names a /metrics page exports, with the series names of histograms and summaries. */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [name, type] = [m[1]!, m[2]!];
    names.add(name);
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
    if (type === "summary") for (const s of ["_sum", "_count"]) names.add(name + s);
  }
  return names;
}

/** mentra_* metric names and mentra:* recording-rule names in a PromQL expression. */
const metricTokens = (promql: string) => [...promql.matchAll(/\bmentra[_:][a-z0-9_:]*[a-z0-9_]/g)].map((m) => m[0]);

function dashboardQueries(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) dashboardQueries(n, out);
  else if (isObj(node)) {
    for (const [k, v] of Object.entries(node)) {
      if ((k === "expr" || k === "definition") && typeof v === "string") out.push(v);
      else if (k === "query" && typeof v === "string") out.push(v);
      else dashboardQueries(v, out);
    }
  }
  return out;
}

test("metric names in the adapter rules, KEDA and Porter queries, alerts and dashboard are exported by a live pod and gateway", async () => {
  const pod = await startTestPod({ podId: "pod-metrics" });
  const gw = new Gateway(loadGatewayConfig({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" }), { registry: new MemoryPodRegistry(), assignments: new MemoryAssignmentStore() });
  let exported: Set<string>;
  try {
    const gwUrl = await gw.start();
    const [podText, gwText] = await Promise.all([fetch(`${pod.httpUrl}/metrics`).then((r) => r.text()), fetch(`${gwUrl}/metrics`).then((r) => r.text())]);
    exported = new Set([...exportedNames(podText), ...exportedNames(gwText)]);
  } finally {
    await gw.stop();
    await pod.close();
  }
  assert.ok(exported.has("mentra_user_sessions") && exported.has("mentra_gateway_pods") && exported.has("mentra_event_loop_delay_seconds_bucket"));

  // Where each query comes from, so a failure names the file.
  const queries: [string, string][] = [];
  const rules = parseYaml(read(join(DEPLOY, "prometheus-rules.yaml"))) as Obj;
  const recorded = new Set<string>();
  for (const g of rules.groups as Obj[]) {
    for (const r of g.rules as Obj[]) {
      queries.push([`prometheus-rules.yaml ${r.alert ?? r.record}`, r.expr as string]);
      if (r.record) recorded.add(r.record as string);
    }
  }
  queries.push(["templates/prometheusrule.yaml", read(join(TEMPLATES, "prometheusrule.yaml"))]);
  const adapter = parseYaml(read(join(DEPLOY, "prometheus-adapter-rules.yaml"))) as Obj;
  const adapterNames = new Set<string>();
  for (const r of (adapter.rules as Obj).custom as Obj[]) {
    queries.push(["prometheus-adapter-rules.yaml seriesQuery", r.seriesQuery as string], ["prometheus-adapter-rules.yaml metricsQuery", r.metricsQuery as string]);
    adapterNames.add((r.name as Obj).as as string);
  }
  const scaling = read(join(TEMPLATES, "autoscaling.yaml"));
  const keda = [...scaling.matchAll(/query: >-\n\s*(.+)/g)].map((m) => m[1]!);
  assert.equal(keda.length, 3, "three KEDA prometheus triggers");
  for (const q of keda) queries.push(["templates/autoscaling.yaml KEDA query", q]);
  const porter = parseYaml(read(join(DEPLOY, "porter.yaml"))) as Obj;
  for (const s of porter.services as Obj[]) {
    const custom = get(s, "autoscaling.customAutoscaling.prometheusMetricCustomAutoscaling") as Obj | undefined;
    if (custom) queries.push([`porter.yaml ${s.name}`, `${custom.metricName} ${custom.query}`]);
  }
  const dashboard = JSON.parse(read(join(DEPLOY, "grafana-dashboard.json"))) as Obj;
  const dq = dashboardQueries(dashboard);
  assert.ok(dq.length > 30, `dashboard queries: ${dq.length}`);
  for (const q of dq) queries.push(["grafana-dashboard.json", q]);

  const unknown: string[] = [];
  const used = new Set<string>();
  for (const [where, q] of queries) {
    for (const name of metricTokens(q)) {
      if (name.includes(":")) {
        if (!recorded.has(name)) unknown.push(`${where}: recording rule ${name} is not defined`);
        continue;
      }
      used.add(name);
      if (!exported.has(name)) unknown.push(`${where}: ${name}`);
    }
  }
  assert.deepEqual(unknown, [], "metrics used but not exported");
  for (const n of ["mentra_event_loop_delay_seconds_bucket", "mentra_event_loop_utilization", "mentra_user_sessions", "mentra_gateway_pods", "mentra_pod_draining", "mentra_drain_deadline_seconds", "mentra_drains_past_deadline_total", "mentra_unhandled_rejections_total"]) {
    assert.ok(used.has(n), `${n} is used`);
  }

  // The HPA asks prometheus-adapter for exactly the metrics its rules serve.
  const hpaMetrics = [...scaling.matchAll(/metric:\n\s*name: (\S+)/g)].map((m) => m[1]!);
  assert.deepEqual(hpaMetrics.sort(), ["mentra_event_loop_lag_p99_2m_ms", "mentra_event_loop_utilization_2m", "mentra_user_sessions"]);
  for (const n of hpaMetrics) assert.ok(adapterNames.has(n), `HPA metric ${n} is served by an adapter rule (${[...adapterNames].join(", ")})`);
});

// ---------------------------------------------------------------- the container command, for real

interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  raw: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const procs: Proc[] = [];
let redis: RedisHandle | null = null;
// Last resort if the test process dies before after() runs: no child outlives it.
process.once("exit", () => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
});

function run(argv: string[], env: Record<string, string>): Proc {
  // "node" is the image's node; here, the one running the tests (the same major version).
  const [bin, ...args] = argv;
  const child = spawn(bin === "node" ? process.execPath : bin!, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  const p: Proc = {
    child,
    lines: [],
    raw: [],
    exited: new Promise((res) => child.once("exit", (code, signal) => res({ code, signal }))),
  };
  let buf = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      p.raw.push(line);
      try {
        p.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr!.on("data", (d: Buffer) => p.raw.push(d.toString()));
  procs.push(p);
  return p;
}
const logged = (p: Proc, msg: string) => p.lines.find((l) => l.msg === msg);
const tail = (p: Proc) => p.raw.slice(-15).join("\n");
async function exitOf(p: Proc, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.exited, new Promise<null>((res) => (timer = setTimeout(() => res(null), ms)))]);
  clearTimeout(timer);
  assert.ok(r, `process did not exit within ${ms} ms:\n${tail(p)}`);
  return r;
}

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  await redis?.stop();
});

test("the image's command runs a pod with the chart's env: /livez, registered URLs, SIGTERM drains and exits 0; gateway and operator drain too", async () => {
  const d = parseDockerfile();
  const base = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...d.env };
  const secrets = { JWT_SECRET: "deploy-test-jwt", ROUTE_TICKET_KEY: "deploy-test-ticket", ADMIN_TOKEN: "deploy-test-admin" };
  // As the chart sets it (templates/pod-statefulset.yaml), on loopback and with ports 0; POD_ID is
  // what the downward API gives a pod of release "mentra-cluster"; UDP_HOST is udp.advertiseHost
  // after Kubernetes expands $(POD_ID).
  const host = str("ingress.host");
  const prefix = `deploytest${process.pid}:`;
  const podEnv = (podId: string): Record<string, string> => ({
    ...base,
    POD_ID: podId,
    HOST: "127.0.0.1",
    PORT: "0",
    UDP_BIND_HOST: "127.0.0.1",
    UDP_PORT: "0",
    UDP_HOST: str("udp.advertiseHost").replace("{podId}", podId),
    PUBLIC_URL_TEMPLATE: `${str("ingress.scheme")}://${host}/p/{podId}`,
    NODE_ENV: "production",
    REDIS_URL: redis!.url,
    REDIS_PREFIX: prefix,
    ...secrets,
    LOG_LEVEL: "info",
    REGION: "test",
    VERSION: "0.1.0",
    MAX_SESSIONS: String(num("pod.maxSessions")),
    PLACEMENT_LAG_P99_CAP_MS: String(num("pod.placementLagP99CapMs")),
    ELU_CAP: String(num("pod.eluCap")),
    READY_LAG_P99_CAP_MS: String(num("pod.readyLagP99CapMs")),
    MAX_NEW_SESSIONS_PER_S: String(num("pod.maxNewSessionsPerS")),
    DRAIN_DEADLINE_MS: String(num("pod.drainDeadlineMs")),
    LAG_SAMPLE_INTERVAL_MS: String(num("pod.lagSampleIntervalMs")),
  });
  // The test sets what the chart sets (less the expansion helpers and the optional directory vars).
  const chartNames = templateEnvNames("pod-statefulset.yaml");
  const optional = new Set([...EXPANSION_ONLY, "MONGODB_URL", "MONGODB_DB", "DIRECTORY_SEED"]);
  const testNames = new Set(Object.keys(podEnv("x")).filter((k) => !(k in base) || k === "NODE_ENV"));
  assert.deepEqual([...chartNames].filter((n) => !optional.has(n) && !testNames.has(n)), [], "chart env the test does not set");
  assert.deepEqual([...testNames].filter((n) => !chartNames.has(n)), [], "test env the chart does not set");

  const podA = "mentra-cluster-pod-0";
  const podB = "mentra-cluster-pod-1";
  const a = run(containerArgv(d), podEnv(podA));
  const b = run(containerArgv(d), podEnv(podB));
  const gw = run(containerArgv(d, templateArgs("gateway.yaml")), {
    ...base,
    NODE_ENV: "production",
    GATEWAY_ID: "mentra-cluster-gateway-0",
    HOST: "127.0.0.1",
    PORT: "0",
    ROUTE_TICKET_TTL_MS: String(num("gateway.routeTicketTtlMs")),
    REDIS_URL: redis!.url,
    REDIS_PREFIX: prefix,
    ...secrets,
    LOG_LEVEL: "info",
  });

  const urlOf = async (p: Proc, msg: string, key: string) => {
    const line = await eventually(() => logged(p, msg), 15_000, `"${msg}"`).catch((err: Error) => {
      throw new Error(`${err.message}\n${tail(p)}`);
    });
    return line![key] as string;
  };
  const [aUrl, bUrl, gwUrl] = await Promise.all([urlOf(a, "pod listening", "httpUrl"), urlOf(b, "pod listening", "httpUrl"), urlOf(gw, "gateway listening", "url")]);

  // Probes, also through the pod's ingress path (the ingress forwards /p/<podId>/… unchanged).
  for (const path of ["/livez", `/p/${podA}/livez`]) {
    const r = await fetch(`${aUrl}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(await r.text(), "ok");
  }
  const ready = await eventually(async () => {
    const r = await fetch(`${aUrl}/readyz`);
    return r.status === 200 ? ((await r.json()) as { ready: boolean; podId: string }) : null;
  }, 10_000, "pod ready");
  assert.equal(ready!.podId, podA);
  assert.equal((await fetch(`${bUrl}/p/${podB}/livez`)).status, 200);
  assert.equal((await fetch(`${gwUrl}/livez`)).status, 200);

  // The gateway sees both pods with the URLs the chart wires in, and routes a phone to one of them.
  const admin = { authorization: `Bearer ${secrets.ADMIN_TOKEN}` };
  type PodView = { podId: string; state: string; endpoints: { httpUrl: string; wsUrl: string; udpHost: string } };
  const pods = await eventually(async () => {
    const r = (await (await fetch(`${gwUrl}/admin/pods`, { headers: admin })).json()) as { pods: PodView[] };
    return r.pods.filter((p) => p.state === "ready").length === 2 ? r.pods : null;
  }, 10_000, "both pods ready in the gateway's registry");
  const viewA = pods!.find((p) => p.podId === podA)!;
  assert.equal(viewA.endpoints.httpUrl, `https://${host}/p/${podA}`);
  assert.equal(viewA.endpoints.wsUrl, `wss://${host}/p/${podA}/glasses-ws`);
  assert.equal(viewA.endpoints.udpHost, `${podA}.udp.example.com`);
  const route = await fetch(`${gwUrl}/v1/route`, { method: "POST", headers: { authorization: `Bearer ${mintUserToken("deploy-test@example.com", secrets.JWT_SECRET)}` } });
  assert.equal(route.status, 200);
  const body = (await route.json()) as { podId: string; glassesWsUrl: string; restBaseUrl: string; udpHost: string };
  assert.ok([podA, podB].includes(body.podId));
  assert.ok(body.glassesWsUrl.startsWith(`wss://${host}/p/${body.podId}/glasses-ws?ticket=`), body.glassesWsUrl);
  assert.equal(body.restBaseUrl, `https://${host}/p/${body.podId}`);
  assert.equal(body.udpHost, `${body.podId}.udp.example.com`);
  assert.match(await (await fetch(`${aUrl}/metrics`)).text(), /^mentra_pod_draining\{[^}]*\} 0$/m);

  // SIGTERM (what tini forwards on a scale-down or `kubectl delete pod`) to pod A: drain, then exit 0.
  // Meanwhile the operator drain documented in docs/deploy.md (the CLI in the image, through the
  // gateway's admin API) drains pod B.
  a.child.kill("SIGTERM");
  const cli = run(["node", "--import", "tsx", "apps/cli/src/cli.ts", "drain", podB, "--gateway", gwUrl, "--deadline", "10s"], { ...base, ADMIN_TOKEN: secrets.ADMIN_TOKEN });
  const draining = await eventually(async () => {
    const r = await fetch(`${aUrl}/readyz`).catch(() => null);
    return r && r.status === 503 ? ((await r.json()) as { reason: string }) : null;
  }, 5_000, "readyz 503 while draining");
  assert.equal(draining!.reason, "draining");
  assert.deepEqual(await exitOf(a, 15_000), { code: 0, signal: null });
  assert.equal(logged(a, "drain started")?.reason, "sigterm", tail(a));
  assert.ok(logged(a, "drain finished"), tail(a));

  assert.deepEqual(await exitOf(cli, 20_000), { code: 0, signal: null });
  assert.match(cli.raw.join("\n"), new RegExp(`${podB}: drain requested[\\s\\S]*${podB} has left the cluster`));
  assert.deepEqual(await exitOf(b, 10_000), { code: 0, signal: null });
  assert.equal(logged(b, "drain started")?.reason, "operator", tail(b));

  // The gateway has no drain: SIGTERM closes it, exit 0.
  gw.child.kill("SIGTERM");
  assert.deepEqual(await exitOf(gw, 5_000), { code: 0, signal: null });
});
