/**
 * A small parser for the Prometheus text exposition format 0.0.4, enough to check what a pod
 * really serves on /metrics (tests, bench, smoke checks) without trusting the library that wrote it.
 *
 * Handles `# HELP` (with `\\` and `\n` escapes), `# TYPE`, other comments, label sets with
 * `\\`, `\"`, `\n` escapes and an optional trailing comma, NaN/±Inf values, optional timestamps,
 * and groups histogram `_bucket`/`_sum`/`_count` and summary `_sum`/`_count` samples under their
 * family. Samples of an undeclared family become an `untyped` family of their own name.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs?: number;
}

export interface PromFamily {
  type: string;
  help: string;
  samples: PromSample[];
}

export class PromParseError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`line ${line}: ${message}`);
    this.name = "PromParseError";
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const SUFFIXES: Record<string, readonly string[]> = {
  histogram: ["_bucket", "_sum", "_count"],
  summary: ["_sum", "_count"],
};

export function parsePrometheusText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const family = (name: string): PromFamily => {
    let f = families.get(name);
    if (!f) {
      f = { type: "untyped", help: "", samples: [] };
      families.set(name, f);
    }
    return f;
  };

  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!.replace(/\r$/, "").trim();
    if (line === "") continue;

    if (line.startsWith("#")) {
      const m = /^#\s*(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) continue; // plain comment
      const [, keyword, name, rest = ""] = m;
      if (!METRIC_NAME.test(name!) || METRIC_NAME.exec(name!)![0] !== name) {
        throw new PromParseError(`invalid metric name in ${keyword}: ${name}`, lineNo);
      }
      if (keyword === "HELP") {
        family(name!).help = unescapeHelp(rest);
      } else {
        const type = rest.trim();
        if (!TYPES.has(type)) throw new PromParseError(`unknown metric type "${type}"`, lineNo);
        const f = family(name!);
        if (f.samples.length > 0) throw new PromParseError(`TYPE for ${name} after its samples`, lineNo);
        f.type = type;
      }
      continue;
    }

    const sample = parseSampleLine(line, lineNo);
    family(familyOf(sample.name, families)).samples.push(sample);
  }
  return families;
}

/** The family a sample belongs to: its own name, or a histogram/summary it is a suffix of. */
function familyOf(sampleName: string, families: Map<string, PromFamily>): string {
  if (families.has(sampleName)) return sampleName;
  for (const [type, suffixes] of Object.entries(SUFFIXES)) {
    for (const suffix of suffixes) {
      if (!sampleName.endsWith(suffix)) continue;
      const base = sampleName.slice(0, -suffix.length);
      if (families.get(base)?.type === type) return base;
    }
  }
  return sampleName;
}

function parseSampleLine(line: string, lineNo: number): PromSample {
  const nameMatch = METRIC_NAME.exec(line);
  if (!nameMatch) throw new PromParseError(`expected a metric name: ${line}`, lineNo);
  const name = nameMatch[0];
  let pos = name.length;
  const labels: Record<string, string> = {};

  const skipSpaces = () => {
    while (line[pos] === " " || line[pos] === "\t") pos++;
  };

  skipSpaces();
  if (line[pos] === "{") {
    pos++;
    for (;;) {
      skipSpaces();
      if (line[pos] === "}") {
        pos++;
        break;
      }
      const labelMatch = LABEL_NAME.exec(line.slice(pos));
      if (!labelMatch) throw new PromParseError(`expected a label name at column ${pos + 1}`, lineNo);
      const labelName = labelMatch[0];
      pos += labelName.length;
      skipSpaces();
      if (line[pos] !== "=") throw new PromParseError(`expected '=' after label ${labelName}`, lineNo);
      pos++;
      skipSpaces();
      if (line[pos] !== '"') throw new PromParseError(`expected '"' to open label ${labelName}`, lineNo);
      pos++;
      let value = "";
      for (;;) {
        const ch = line[pos];
        if (ch === undefined) throw new PromParseError(`unterminated value of label ${labelName}`, lineNo);
        pos++;
        if (ch === '"') break;
        if (ch === "\\") {
          const esc = line[pos++];
          if (esc === "n") value += "\n";
          else if (esc === "\\" || esc === '"') value += esc;
          else throw new PromParseError(`invalid escape \\${esc ?? ""} in label ${labelName}`, lineNo);
        } else {
          value += ch;
        }
      }
      if (Object.hasOwn(labels, labelName)) {
        throw new PromParseError(`duplicate label ${labelName}`, lineNo);
      }
      labels[labelName] = value;
      skipSpaces();
      if (line[pos] === ",") {
        pos++;
      } else if (line[pos] !== "}") {
        throw new PromParseError(`expected ',' or '}' after label ${labelName}`, lineNo);
      }
    }
  }

  const rest = line.slice(pos).trim().split(/\s+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === "") {
    throw new PromParseError(`expected a value and optional timestamp after ${name}`, lineNo);
  }
  const value = parseValue(rest[0]!);
  if (value === undefined) throw new PromParseError(`invalid value "${rest[0]}" for ${name}`, lineNo);
  const sample: PromSample = { name, labels, value };
  if (rest.length === 2) {
    if (!/^-?\d+$/.test(rest[1]!)) throw new PromParseError(`invalid timestamp "${rest[1]}"`, lineNo);
    sample.timestampMs = Number(rest[1]);
  }
  return sample;
}

function parseValue(token: string): number | undefined {
  // Like Go's strconv.ParseFloat, which Prometheus uses: NaN/Inf are case-insensitive
  // (prom-client itself writes "Nan").
  switch (token.toLowerCase()) {
    case "nan":
      return NaN;
    case "inf":
    case "+inf":
    case "infinity":
    case "+infinity":
      return Infinity;
    case "-inf":
    case "-infinity":
      return -Infinity;
  }
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(token)) return undefined;
  return Number(token);
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c: string) => (c === "n" ? "\n" : "\\"));
}
