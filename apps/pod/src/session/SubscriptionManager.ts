/**
 * Which app wants which stream. Apps send their full list each time; the exact subscription string
 * is kept because data_stream.streamType must echo it (2.1.29 dispatches on exact match).
 */
import { isAudioStream, transcriptionLanguage } from "@mentra-cluster/protocol";

export class SubscriptionManager {
  private readonly byApp = new Map<string, string[]>();
  /** Derived indexes, rebuilt on every change (changes are rare, lookups are per packet). */
  private byStream = new Map<string, [pkg: string, sub: string][]>();
  private transcription = new Map<string, [pkg: string, sub: string][]>();
  private wildcard: string[] = [];
  private audioNeeded = false;
  /** Per-packet answers, derived in rebuild(): read-only to callers. */
  private languages: readonly string[] = [];
  private audioChunk: readonly (readonly [pkg: string, sub: string])[] = [];

  update(pkg: string, subs: string[]): void {
    this.byApp.set(pkg, [...new Set(subs)]);
    this.rebuild();
  }

  remove(pkg: string): void {
    if (this.byApp.delete(pkg)) this.rebuild();
  }

  get(pkg: string): string[] {
    return this.byApp.get(pkg) ?? [];
  }

  all(): Record<string, string[]> {
    return Object.fromEntries(this.byApp);
  }

  /** Apps that receive a relayed stream, with the string to echo as streamType. */
  targets(stream: string): [pkg: string, sub: string][] {
    const exact = this.byStream.get(stream) ?? [];
    if (this.wildcard.length === 0) return exact;
    const out = [...exact];
    for (const pkg of this.wildcard) if (!out.some(([p]) => p === pkg)) out.push([pkg, stream]);
    return out;
  }

  /** Languages some app transcribes (wildcard apps imply en-US); asked once per audio packet. */
  transcriptionLanguages(): readonly string[] {
    return this.languages;
  }

  transcriptionTargets(lang: string): [pkg: string, sub: string][] {
    const exact = this.transcription.get(lang) ?? [];
    if (this.wildcard.length === 0) return exact;
    return [...exact, ...this.wildcard.filter((p) => !exact.some(([e]) => e === p)).map((p): [string, string] => [p, `transcription:${lang}`])];
  }

  /** Apps that receive raw audio; asked once per audio packet. */
  audioChunkApps(): readonly (readonly [pkg: string, sub: string])[] {
    return this.audioChunk;
  }

  /** True while any app holds a subscription that needs the microphone. */
  needsAudio(): boolean {
    return this.audioNeeded;
  }

  private rebuild(): void {
    const byStream = new Map<string, [string, string][]>();
    const transcription = new Map<string, [string, string][]>();
    const wildcard: string[] = [];
    let audio = false;
    for (const [pkg, subs] of this.byApp) {
      for (const sub of subs) {
        if (isAudioStream(sub)) audio = true;
        if (sub === "all" || sub === "*") {
          wildcard.push(pkg);
          continue;
        }
        const lang = transcriptionLanguage(sub);
        if (lang) {
          const list = transcription.get(lang) ?? [];
          list.push([pkg, sub]);
          transcription.set(lang, list);
          continue;
        }
        const base = sub.split("?")[0]!;
        const list = byStream.get(base) ?? [];
        list.push([pkg, sub]);
        byStream.set(base, list);
      }
    }
    this.byStream = byStream;
    this.transcription = transcription;
    this.wildcard = wildcard;
    this.audioNeeded = audio;
    const langs = [...transcription.keys()];
    if (wildcard.length > 0 && !langs.includes("en-US")) langs.push("en-US");
    this.languages = langs;
    const exact = byStream.get("audio_chunk") ?? [];
    this.audioChunk = [...exact, ...wildcard.filter((p) => !exact.some(([e]) => e === p)).map((p): [string, string] => [p, "audio_chunk"])];
  }
}
