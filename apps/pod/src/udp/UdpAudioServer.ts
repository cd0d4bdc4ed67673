/**
 * One UDP socket per pod. Datagrams are looked up by the FNV-1a user hash in the header; every
 * datagram that does not become audio for a registered session is a counted drop with a reason.
 */
import dgram from "node:dgram";
import { decodeDatagram, decryptBody, type UdpDropReason } from "@mentra-cluster/protocol";
import type { PodMetrics } from "@mentra-cluster/metrics";
import type { Logger } from "pino";
import type { Clock } from "../util/clock.ts";
import { ReorderBuffer } from "./reorder.ts";

export interface UdpTarget {
  readonly userId: string;
  /** Current secretbox key, or null when the session did not ask for encryption. */
  readonly udpKey: Buffer | null;
  readonly reorder: ReorderBuffer;
  onUdpPing(): void;
  onUdpAudio(pcm: Buffer): void;
}

export type RegisterResult = "ok" | "collision";

export class UdpAudioServer {
  private socket: dgram.Socket | null = null;
  private readonly targets = new Map<number, UdpTarget>();
  readonly drops: Record<UdpDropReason, number> = {
    too_small: 0, too_large: 0, unknown_hash: 0, decrypt_failed: 0, empty: 0, late: 0, buffer_overflow: 0, not_owner: 0,
  };
  private readonly out: Buffer[] = [];

  constructor(
    private readonly opts: { host: string; port: number; metrics: PodMetrics; clock: Clock; log: Logger },
  ) {}

  get registered(): number {
    return this.targets.size;
  }

  async start(): Promise<{ address: string; port: number }> {
    const socket = dgram.createSocket({ type: "udp4", recvBufferSize: 4 * 1024 * 1024 });
    socket.on("message", (msg) => this.onMessage(msg));
    socket.on("error", (err) => this.opts.log.error({ err }, "udp socket error"));
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(this.opts.port, this.opts.host, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    this.socket = socket;
    const a = socket.address();
    return { address: a.address, port: a.port };
  }

  /** A hash already held by another user is refused, never silently overwritten (C26). */
  register(hash: number, target: UdpTarget): RegisterResult {
    const cur = this.targets.get(hash);
    if (cur && cur !== target && cur.userId !== target.userId) return "collision";
    if (!cur) this.opts.metrics.udpRegisteredInc();
    this.targets.set(hash, target);
    return "ok";
  }

  /** Removes the registration only if it still belongs to this target. */
  unregister(hash: number, target: UdpTarget): void {
    if (this.targets.get(hash) !== target) return;
    this.targets.delete(hash);
    this.opts.metrics.udpRegisteredDec();
  }

  private drop(reason: UdpDropReason): void {
    this.drops[reason]++;
    this.opts.metrics.udpDropped(reason);
  }

  /** Public so the fuzz test and benchmarks can drive it without a socket. */
  onMessage(msg: Buffer): void {
    const m = this.opts.metrics;
    m.udpReceived();
    const d = decodeDatagram(msg);
    if (d.kind === "invalid") return this.drop(d.reason);
    const target = this.targets.get(d.userIdHash);
    if (d.kind === "ping") {
      m.udpPing();
      if (!target) return this.drop("unknown_hash");
      target.onUdpPing();
      return;
    }
    if (!target) return this.drop("unknown_hash");
    let pcm = d.body;
    if (target.udpKey) {
      const opened = decryptBody(d.body, target.udpKey);
      if (!opened) {
        m.udpDecryptFailed();
        return this.drop("decrypt_failed");
      }
      m.udpDecrypted();
      pcm = opened;
    }
    if (pcm.length === 0) return this.drop("empty");
    const lateBefore = target.reorder.late;
    const out = this.out;
    out.length = 0;
    target.reorder.push(d.sequence, pcm, this.opts.clock.now(), out);
    if (target.reorder.late !== lateBefore) this.drop("late");
    for (let i = 0; i < out.length; i++) target.onUdpAudio(out[i]!);
    out.length = 0;
  }

  async stop(): Promise<void> {
    const s = this.socket;
    this.socket = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
