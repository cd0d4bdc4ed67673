export { Pod, createPod, MAX_WS_FRAME_BYTES, type PodDeps, type PodAddresses } from "./server.ts";
export { loadConfig, DEV_JWT_SECRET, type PodConfig } from "./config.ts";
export { ManualClock, realClock, type Clock } from "./util/clock.ts";
export { EnergyTranscriptionProvider } from "./transcription/energy.ts";
export { StreamTranscriptionProvider, streamProviderFromEnv, DEFAULT_STT_FRAME_MS, type StreamProviderOptions, type StreamProviderStats } from "./transcription/stream.ts";
export type { TranscriptionProvider, TranscriptionStream } from "./transcription/provider.ts";
export { DEFAULT_TIMINGS, type PodTimings } from "./context.ts";
