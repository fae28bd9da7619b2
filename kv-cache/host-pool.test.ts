import { describe, expect, it } from 'vitest';
import { HostKvCachePool } from './host-pool.ts';
import { kvBytesPerToken } from './kv-layout.ts';

const layout = { keptLayers: [0, 2], numKvHeads: 2, headDim: 8, maxSeqLen: 128 };

/** K/V rows [S, kvH*D] whose values encode (tag, position, head, dim). */
function rows(tag: number, start: number, seqLen: number): Float32Array {
  const out = new Float32Array(seqLen * 16);
  for (let s = 0; s < seqLen; s++)
    for (let i = 0; i < 16; i++) out[s * 16 + i] = tag * 1000 + (start + s) * 16 + i;
  return out;
}

describe('HostKvCachePool', () => {
  it('bytes per token count only kept layers', () => {
    expect(kvBytesPerToken(layout)).toBe(2 * 2 * 2 * 8 * 4);
  });

  it('admits by worst case against the budget and frees on release', () => {
    const pool = new HostKvCachePool(100 * kvBytesPerToken(layout));
    pool.addVariant('v', layout);
    const a = pool.tryReserve('v', 'a', 60)!;
    expect(a.bytes).toBe(60 * kvBytesPerToken(layout));
    expect(pool.tryReserve('v', 'b', 41)).toBeNull();
    const b = pool.tryReserve('v', 'b', 40)!;
    expect(pool.reservedBytes).toBe(100 * kvBytesPerToken(layout));
    pool.release(a);
    pool.release(b);
    expect(pool.reservedBytes).toBe(0);
    expect(pool.stats('v').sequences).toBe(0);
  });

  it('keeps live rows contiguous: removing a row moves the last one into its place, data intact', () => {
    const pool = new HostKvCachePool(1e9);
    const arena = pool.addVariant('v', layout);
    for (const [i, id] of ['a', 'b', 'c'].entries()) {
      const row = arena.addRow(id, 10 + i * 50);
      arena.append(0, [row], 3, rows(i, 0, 3), rows(i, 0, 3));
      arena.append(1, [row], 3, rows(i + 10, 0, 3), rows(i + 10, 0, 3));
      arena.advance([row], 3);
    }
    arena.removeRow('a');
    expect(arena.numRows).toBe(2);
    expect(arena.sequenceIdAt(0)).toBe('c');
    expect(arena.length(0)).toBe(3);
    const [layer0] = arena.pastViews();
    const cap = arena.tokenCapacity;
    // Row 0 now holds c's data: head 1, position 2, dim 5 = tag 2.
    expect(layer0!.key[((0 * 2 + 1) * cap + 2) * 8 + 5]).toBe(2 * 1000 + 2 * 16 + 8 + 5);
    expect(layer0!.key.length).toBe(2 * 2 * cap * 8);
  });

  it('grows token capacity for a longer sequence without losing cached rows', () => {
    const pool = new HostKvCachePool(1e9);
    const arena = pool.addVariant('v', layout);
    arena.addRow('short', 5);
    arena.append(0, [0], 4, rows(1, 0, 4), rows(1, 0, 4));
    arena.append(1, [0], 4, rows(1, 0, 4), rows(1, 0, 4));
    arena.advance([0], 4);
    const before = arena.tokenCapacity;
    arena.addRow('long', 120);
    expect(arena.tokenCapacity).toBeGreaterThan(before);
    const cap = arena.tokenCapacity;
    expect(arena.pastViews()[0]!.value[(0 * cap + 3) * 8 + 2]).toBe(1000 + 3 * 16 + 2);
  });

  it('copyPrefix copies the first positions of every kept layer, K and V, and the copy outlives its donor', () => {
    const pool = new HostKvCachePool(1e9);
    const arena = pool.addVariant('v', layout);
    arena.addRow('donor', 40);
    for (const layer of [0, 1]) arena.append(layer, [0], 6, rows(layer + 1, 0, 6), rows(layer + 5, 0, 6));
    arena.advance([0], 6);
    const receiver = arena.addRow('receiver', 40);
    arena.copyPrefix(0, receiver, 4);
    expect(arena.length(receiver)).toBe(4);
    // The receiver goes on from position 4 with its own tokens.
    for (const layer of [0, 1]) arena.append(layer, [receiver], 1, rows(9, 4, 1), rows(9, 4, 1));
    arena.advance([receiver], 1);
    arena.removeRow('donor'); // the receiver moves to row 0
    expect(arena.rowOf('receiver')).toBe(0);
    const cap = arena.tokenCapacity;
    const at = (view: Float32Array, h: number, pos: number, d: number): number =>
      view[((0 * 2 + h) * cap + pos) * 8 + d]!;
    const [layer0, layer1] = arena.pastViews();
    for (let pos = 0; pos < 4; pos++) {
      for (const h of [0, 1]) {
        expect(at(layer0!.key, h, pos, 3)).toBe(1000 + pos * 16 + h * 8 + 3);
        expect(at(layer0!.value, h, pos, 3)).toBe(5000 + pos * 16 + h * 8 + 3);
        expect(at(layer1!.key, h, pos, 7)).toBe(2000 + pos * 16 + h * 8 + 7);
        expect(at(layer1!.value, h, pos, 7)).toBe(6000 + pos * 16 + h * 8 + 7);
      }
    }
    expect(at(layer1!.key, 1, 4, 0)).toBe(9000 + 4 * 16 + 8);
    // Nothing beyond the copied prefix came along (position 5 of the donor).
    expect(at(layer0!.key, 0, 5, 0)).toBe(0);
    // A row's view is its slice of the batch-major buffer.
    expect(arena.rowViews(0)[1]!.key).toEqual(layer1!.key.subarray(0, 2 * cap * 8));
  });

  it('copyPrefix refuses a non-empty receiver or more tokens than the donor holds', () => {
    const pool = new HostKvCachePool(1e9);
    const arena = pool.addVariant('v', layout);
    arena.addRow('a', 10);
    for (const layer of [0, 1]) arena.append(layer, [0], 3, rows(1, 0, 3), rows(1, 0, 3));
    arena.advance([0], 3);
    arena.addRow('b', 10);
    expect(() => arena.copyPrefix(0, 1, 4)).toThrow(/copyPrefix/);
    expect(() => arena.copyPrefix(1, 0, 0)).toThrow(/copyPrefix/);
    expect(() => arena.copyPrefix(0, 0, 1)).toThrow(/copyPrefix/);
  });
});
