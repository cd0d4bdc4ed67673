/**
 * Cuts PCM into fixed-size packets. Without loop the last packet may be short (trimmed to whole s16
 * samples); with loop packets are always full and wrap around the end of the clip.
 */
export function pcmChunker(pcm: Buffer, bytesPerPacket: number, loop: boolean): () => Buffer | null {
  if (bytesPerPacket <= 0 || bytesPerPacket % 2 !== 0) throw new RangeError(`packet size must be a positive even byte count, got ${bytesPerPacket}`);
  const usable = pcm.length - (pcm.length % 2);
  let offset = 0;
  if (!loop) {
    return () => {
      if (offset >= usable) return null;
      const chunk = pcm.subarray(offset, Math.min(usable, offset + bytesPerPacket));
      offset += chunk.length;
      return chunk;
    };
  }
  if (usable === 0) throw new RangeError("cannot loop an empty PCM buffer");
  return () => {
    if (offset + bytesPerPacket <= usable) {
      const chunk = pcm.subarray(offset, offset + bytesPerPacket);
      offset = (offset + bytesPerPacket) % usable;
      return chunk;
    }
    const chunk = Buffer.allocUnsafe(bytesPerPacket);
    let filled = 0;
    while (filled < bytesPerPacket) {
      const n = Math.min(bytesPerPacket - filled, usable - offset);
      pcm.copy(chunk, filled, offset, offset + n);
      filled += n;
      offset = (offset + n) % usable;
    }
    return chunk;
  };
}
