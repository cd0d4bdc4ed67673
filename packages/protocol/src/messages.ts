/** Wire types for the phone channel (/glasses-ws) and the mini-app channel (/app-ws), protocol.md §1-2. */

// ---------- Phone → pod ----------
export interface PhonePing { type: "ping" }
export interface PhonePong { type: "pong" }
export interface PhoneConnectionInit { type: "connection_init"; userId?: string; coreToken?: string }
export interface PhoneStartApp { type: "start_app"; packageName: string }
export interface PhoneStopApp { type: "stop_app"; packageName: string }
export interface PhoneGlassesConnectionState {
  type: "glasses_connection_state";
  modelName?: string;
  status: "CONNECTED" | "RECONNECTED" | "DISCONNECTED";
  wifi?: { connected: boolean; ssid?: string };
}
export interface PhoneVad { type: "VAD"; status: boolean | "true" | "false" }
export interface PhoneLocalTranscription {
  type: "local_transcription";
  text: string;
  isFinal: boolean;
  startTime?: number;
  endTime?: number;
  speakerId?: string;
  transcribeLanguage?: string;
  provider?: string;
}
export interface PhoneUdpRegister { type: "udp_register"; userIdHash: number }
export interface PhoneUdpUnregister { type: "udp_unregister"; userIdHash?: number }
/** Sensor-style messages that are relayed to subscribers verbatim as data_stream. */
export interface PhoneRelayed { type: RelayedPhoneType; [k: string]: unknown }
export const RELAYED_PHONE_TYPES = [
  "head_position",
  "touch_event",
  "button_press",
  "glasses_battery_update",
  "phone_battery_update",
  "location_update",
  "calendar_event",
  "phone_notification",
  "audio_play_response",
  "rgb_led_control_response",
] as const;
export type RelayedPhoneType = (typeof RELAYED_PHONE_TYPES)[number];

export type PhoneToCloudMessage =
  | PhonePing
  | PhonePong
  | PhoneConnectionInit
  | PhoneStartApp
  | PhoneStopApp
  | PhoneGlassesConnectionState
  | PhoneVad
  | PhoneLocalTranscription
  | PhoneUdpRegister
  | PhoneUdpUnregister
  | PhoneRelayed;

// ---------- Pod → phone ----------
export interface ConnectionAck {
  type: "connection_ack";
  sessionId: string;
  timestamp: string;
  env?: string;
  podId?: string;
  udpHost?: string;
  udpPort?: number;
  udpEncryption?: { key: string; algorithm: "xsalsa20-poly1305" };
}
export interface CloudPing { type: "ping" }
export interface CloudPong { type: "pong"; timestamp?: number }
export interface DisplayEvent {
  type: "display_event";
  packageName: string;
  view: "main" | "dashboard";
  layout: Layout;
  durationMs?: number;
  forceDisplay?: boolean;
  sessionId: string;
  timestamp: string;
}
export interface AppStateChange { type: "app_state_change"; sessionId: string; timestamp: string }
export interface MicrophoneStateChange {
  type: "microphone_state_change";
  sessionId: string;
  isMicrophoneEnabled: boolean;
  requiredData: ("pcm" | "lc3")[];
  bypassVad: boolean;
  timestamp: string;
}
export interface PhoneAppStopped { type: "app_stopped"; packageName: string; timestamp: string }
export interface UdpPingAck { type: "udp_ping_ack"; timestamp: number }
export interface ConnectionError { type: "connection_error"; code?: string; message: string; timestamp: string }

export type CloudToPhoneMessage =
  | ConnectionAck
  | CloudPing
  | CloudPong
  | DisplayEvent
  | AppStateChange
  | MicrophoneStateChange
  | PhoneAppStopped
  | UdpPingAck
  | ConnectionError;

// ---------- Layouts ----------
export type Layout =
  | { layoutType: "text_wall"; text: string }
  | { layoutType: "double_text_wall"; topText: string; bottomText: string }
  | { layoutType: "reference_card"; title: string; text: string }
  | { layoutType: "dashboard_card"; leftText: string; rightText: string }
  | { layoutType: "bitmap_view"; data: string }
  | { layoutType: "bitmap_animation"; frames: string[]; interval: number; repeat: boolean }
  | { layoutType: "clear_view" };
export const LAYOUT_TYPES = [
  "text_wall",
  "double_text_wall",
  "reference_card",
  "dashboard_card",
  "bitmap_view",
  "bitmap_animation",
  "clear_view",
] as const;

// ---------- App → pod ----------
export type Subscription = string | { stream: string; rate?: string };
export interface TpaConnectionInit { type: "tpa_connection_init"; sessionId: string; packageName: string; apiKey: string; timestamp?: string }
export interface TpaSubscriptionUpdate { type: "subscription_update"; packageName: string; sessionId: string; subscriptions: Subscription[]; timestamp?: string }
export interface AppDisplayRequest {
  type: "display_event";
  packageName: string;
  view: "main" | "dashboard";
  layout: Layout;
  durationMs?: number;
  forceDisplay?: boolean;
  sessionId?: string;
  timestamp?: string;
}
export interface AppOwnershipRelease { type: "ownership_release"; packageName: string; sessionId: string; reason: "switching_clouds" | "clean_shutdown" | "user_logout" }
export interface AppPing { type: "ping" }

export type AppToCloudMessage = TpaConnectionInit | TpaSubscriptionUpdate | AppDisplayRequest | AppOwnershipRelease | AppPing;

// ---------- Pod → app ----------
export interface TpaConnectionAck {
  type: "tpa_connection_ack";
  sessionId: string;
  settings: unknown[];
  mentraosSettings: Record<string, unknown>;
  capabilities: unknown | null;
  timestamp: string;
}
export type AppErrorCode =
  | "INVALID_API_KEY"
  | "APP_NOT_STARTED"
  | "SESSION_NOT_FOUND"
  | "INTERNAL_ERROR"
  | "MALFORMED_MESSAGE"
  | "PERMISSION_DENIED";
export interface TpaConnectionError { type: "tpa_connection_error"; code: AppErrorCode; message: string; timestamp: string }
export interface DataStream { type: "data_stream"; sessionId: string; streamType: string; data: unknown; timestamp: string }
export interface DeviceStateUpdate { type: "device_state_update"; state: Record<string, unknown>; fullSnapshot?: boolean; timestamp: string }
export interface AppStoppedToApp { type: "app_stopped"; reason?: "user_disabled" | "system_stop" | "error"; message?: string; timestamp: string }

export type CloudToAppMessage = TpaConnectionAck | TpaConnectionError | DataStream | DeviceStateUpdate | AppStoppedToApp | CloudPong;

// ---------- Webhooks (pod → app HTTP) ----------
export interface SessionRequestWebhook {
  type: "session_request";
  sessionId: string;
  userId: string;
  timestamp: string;
  mentraOSWebsocketUrl: string;
  augmentOSWebsocketUrl: string;
}
export interface StopRequestWebhook {
  type: "stop_request";
  sessionId: string;
  userId: string;
  reason: "user_disabled" | "system_stop" | "error";
  timestamp: string;
}

// ---------- Transcription payload ----------
export interface TranscriptionData {
  type: "transcription";
  text: string;
  isFinal: boolean;
  utteranceId?: string;
  speakerId?: string;
  startTime: number;
  endTime: number;
  transcribeLanguage: string;
  provider?: string;
}

/** App session ids the SDK keys its sessions by: `<userId>-<packageName>` (protocol.md conventions). */
export function appSessionId(userId: string, packageName: string): string {
  return `${userId}-${packageName}`;
}

/** Inverse of appSessionId that strips the known package suffix (the cloud's split("-") breaks on dashed emails). */
export function userIdFromAppSessionId(sessionId: string, packageName: string): string | null {
  const suffix = `-${packageName}`;
  if (!sessionId.endsWith(suffix) || sessionId.length === suffix.length) return null;
  return sessionId.slice(0, -suffix.length).toLowerCase();
}

/**
 * The stream string of a subscription (`"x"` or `{stream:"x",rate}`), or null if it has none. The string is
 * kept exactly as the app sent it (data_stream.streamType must echo it); bare `transcription` is read as
 * en-US by transcriptionLanguage(), not rewritten here.
 */
export function normaliseStream(sub: Subscription): string | null {
  const s = typeof sub === "string" ? sub : sub && typeof sub === "object" && typeof sub.stream === "string" ? sub.stream : null;
  if (s === null) return null;
  return s;
}

/** Streams that need microphone audio on the phone. */
export function isAudioStream(stream: string): boolean {
  return (
    stream === "audio_chunk" ||
    stream === "VAD" ||
    stream === "all" ||
    stream === "*" ||
    stream === "transcription" ||
    stream.startsWith("transcription:") ||
    stream.startsWith("translation:")
  );
}

/** Language of a transcription subscription (`transcription:en-US?hints=…` → `en-US`), or null. */
export function transcriptionLanguage(stream: string): string | null {
  if (stream === "transcription") return "en-US";
  if (!stream.startsWith("transcription:")) return null;
  const lang = stream.slice("transcription:".length).split("?")[0]!;
  return lang || null;
}

export const nowIso = (ms = Date.now()) => new Date(ms).toISOString();
