import { describe, expect, it } from 'vitest';
import { DropserveError } from '../engine/errors.ts';
import { SeededRandom } from '../engine/model/random.ts';
import { type HostKvArena, HostKvCachePool } from './host-pool.ts';
import { blockAligned, DEFAULT_KV_BLOCK_TOKENS, type KvLayout, kvBytesPerToken } from './kv-layout.ts';

const layout: KvLayout = { keptLayers: [0, 2], numKvHeads: 2, headDim: 8, maxSeqLen: 128 };
const BPT = kvBytesPerToken(layout); // 2 × 2 layers × 2 heads × 8 × 4 bytes = 256

/**
 * The value every test writes at (tag, layer, K or V, position, element of kvH*D): distinct integers
 * below 2^24, so Float32 holds them exactly and a misplaced copy shows up as a wrong number.
 */
function encode(tag: number, layer: number, isValue: number, pos: number, element: number): number {
  return ((((tag % 64) * 4 + layer) * 2 + isValue) * 128 + pos) * 64 + element;
}

/** A graph output [B, S, kvH*D] for rows whose tags and start positions are given. */
function kvRows(
  lay: KvLayout,
  layer: number,
  isValue: number,
  batch: { tag: number; start: number }[],
  seqLen: number,
) {
  const elements = lay.numKvHeads * lay.headDim;
  const out = new Float32Array(batch.length * seqLen * elements);
  batch.forEach(({ tag, start }, b) => {
    for (let s = 0; s < seqLen; s++) {
      for (let e = 0; e < elements; e++)
        out[(b * seqLen + s) * elements + e] = encode(tag, layer, isValue, start + s, e);
    }
  });
  return out;
}

/** Reserves, appends `seqLen` tokens of `tag` to each row in every kept layer, and advances. */
function write(arena: HostKvArena, rows: number[], tags: number[], seqLen: number): void {
  const batch = rows.map((row, i) => ({ tag: tags[i]!, start: arena.length(row) }));
  arena.reserveTokens(Math.max(...batch.map((b) => b.start + seqLen)));
  arena.layout.keptLayers.forEach((_, layer) => {
    arena.append(
      layer,
      rows,
      seqLen,
      kvRows(arena.layout, layer, 0, batch, seqLen),
      kvRows(arena.layout, layer, 1, batch, seqLen),
    );
  });
  arena.advance(rows, seqLen);
}

/** Reads (row, layer, K or V, position, element) through the batch view the decode step feeds. */
function read(
  arena: HostKvArena,
  row: number,
  layer: number,
  isValue: number,
  pos: number,
  element: number,
): number {
  const { numKvHeads, headDim } = arena.layout;
  const view = arena.pastViews()[layer]!;
  const h = Math.floor(element / headDim);
  const d = element % headDim;
  return (isValue ? view.value : view.key)[
    ((row * numKvHeads + h) * arena.tokenCapacity + pos) * headDim + d
  ]!;
}

/** Positions of `row` whose K or V differ from the tag expected at each position. */
function mismatches(arena: HostKvArena, row: number, tagAt: number[]): number {
  const elements = arena.layout.numKvHeads * arena.layout.headDim;
  let wrong = arena.length(row) === tagAt.length ? 0 : 1;
  const views = arena.pastViews();
  const { numKvHeads, headDim } = arena.layout;
  const cap = arena.tokenCapacity;
  views.forEach((view, layer) => {
    for (let pos = 0; pos < tagAt.length; pos++) {
      for (let e = 0; e < elements; e++) {
        const at = ((row * numKvHeads + Math.floor(e / headDim)) * cap + pos) * headDim + (e % headDim);
        if (view.key[at] !== encode(tagAt[pos]!, layer, 0, pos, e)) wrong++;
        if (view.value[at] !== encode(tagAt[pos]!, layer, 1, pos, e)) wrong++;
      }
    }
  });
  return wrong;
}

function kvError(fn: () => unknown): DropserveError {
  try {
    fn();
  } catch (e) {
    if (e instanceof DropserveError) return e;
    throw e;
  }
  throw new Error('expected a DropserveError');
}

describe('HostKvCachePool', () => {
  it('validates its options and arena ids', () => {
    expect(() => new HostKvCachePool({ budgetBytes: 0 })).toThrow(RangeError);
    expect(() => new HostKvCachePool({ budgetBytes: Number.POSITIVE_INFINITY })).toThrow(RangeError);
    expect(() => new HostKvCachePool({ budgetBytes: 1e6, blockTokens: 0 })).toThrow(RangeError);
    expect(() => new HostKvCachePool({ budgetBytes: 1e6, blockTokens: 2.5 })).toThrow(RangeError);
    const pool = new HostKvCachePool({ budgetBytes: 1e6 });
    expect(pool.blockTokens).toBe(DEFAULT_KV_BLOCK_TOKENS);
    expect(pool.placement).toBe('host');
    pool.addArena('v', layout);
    expect(() => pool.addArena('v', layout)).toThrow(/already exists/);
    expect(kvError(() => pool.arena('w')).code).toBe('DS_NOT_FOUND');
    expect(kvError(() => pool.stats('w')).code).toBe('DS_NOT_FOUND');
  });

  it('bytes per token count only kept layers', () => {
    expect(BPT).toBe(2 * 2 * 2 * 8 * 4);
  });

  it('grows token capacity in whole blocks, never past the context, and counts used bytes by blocks', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9, blockTokens: 5 });
    const arena = pool.addArena('v', layout);
    arena.addRow('a');
    expect(arena.tokenCapacity).toBe(0);
    expect(pool.allocatedBytes).toBe(0);
    for (const tokens of [1, 6, 11, 40, 97, 128]) {
      arena.reserveTokens(tokens);
      expect(arena.tokenCapacity % 5).toBe(0);
      expect(arena.tokenCapacity).toBeGreaterThanOrEqual(tokens);
      expect(arena.tokenCapacity).toBeLessThanOrEqual(blockAligned(layout.maxSeqLen, 5));
    }
    expect(kvError(() => arena.reserveTokens(129)).code).toBe('DS_INTERNAL');
    const b = arena.addRow('b');
    write(arena, [0, b], [1, 2], 6);
    write(arena, [b], [2], 1);
    // Row a: 6 tokens = 2 blocks; row b: 7 tokens = 2 blocks.
    expect(pool.usedBytes).toBe(4 * 5 * BPT);
    expect(pool.stats('v')).toEqual({
      bytesPerToken: BPT,
      sequences: 2,
      usedBytes: 4 * 5 * BPT,
      allocatedBytes: arena.rowCapacity * arena.tokenCapacity * BPT,
    });
    expect(pool.allocatedBytes).toBe(arena.rowCapacity * arena.tokenCapacity * BPT);
  });

  it('keeps K/V intact through growth in rows and tokens; views are zero-copy slices of one buffer', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9, blockTokens: 4 });
    const arena = pool.addArena('v', layout);
    const tags: number[][] = [];
    for (let i = 0; i < 5; i++) {
      const row = arena.addRow(`s${i}`);
      write(arena, [row], [i], 3 + i);
      tags.push(Array(3 + i).fill(i));
    }
    expect(arena.rowCapacity).toBeGreaterThanOrEqual(5);
    const before = arena.tokenCapacity;
    write(arena, [4], [4], 60); // re-strides every live row
    tags[4]!.push(...Array(60).fill(4));
    expect(arena.tokenCapacity).toBeGreaterThan(before);
    for (let row = 0; row < 5; row++) expect(mismatches(arena, row, tags[row]!)).toBe(0);
    const past = arena.pastViews();
    expect(past).toHaveLength(2);
    expect(past[0]!.key.length).toBe(5 * 2 * arena.tokenCapacity * 8);
    const rowFloats = 2 * arena.tokenCapacity * 8;
    const row3 = arena.rowViews(3);
    expect(row3[1]!.value.buffer).toBe(past[1]!.value.buffer);
    expect(row3[1]!.value.byteOffset).toBe(3 * rowFloats * 4);
    expect(row3[1]!.value[2 * 8 + 1]).toBe(read(arena, 3, 1, 1, 2, 1));
  });

  it('keeps live rows contiguous: removing a row moves the last one into its place, data intact', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9 });
    const arena = pool.addArena('v', layout);
    for (const [i, id] of ['a', 'b', 'c'].entries()) write(arena, [arena.addRow(id)], [i], 3 + i);
    arena.removeRow('a');
    expect(arena.numRows).toBe(2);
    expect(arena.sequenceIdAt(0)).toBe('c');
    expect(arena.rowOf('c')).toBe(0);
    expect(arena.rowOf('b')).toBe(1);
    expect(arena.hasRow('a')).toBe(false);
    expect(mismatches(arena, 0, Array(5).fill(2))).toBe(0);
    expect(mismatches(arena, 1, Array(4).fill(1))).toBe(0);
    expect(arena.pastViews()[0]!.key.length).toBe(2 * 2 * arena.tokenCapacity * 8);
    expect(kvError(() => arena.rowOf('a')).code).toBe('DS_INTERNAL');
  });

  it('refuses writes past the reserved capacity', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9, blockTokens: 4 });
    const arena = pool.addArena('v', layout);
    const row = arena.addRow('a');
    arena.reserveTokens(3);
    expect(arena.tokenCapacity).toBe(4);
    const batch = [{ tag: 1, start: 0 }];
    const error = kvError(() =>
      arena.append(0, [row], 5, kvRows(layout, 0, 0, batch, 5), kvRows(layout, 0, 1, batch, 5)),
    );
    expect(error.code).toBe('DS_INTERNAL');
    expect(error.message).toMatch(/reserveTokens first/);
    expect(kvError(() => arena.advance([row], 5)).code).toBe('DS_INTERNAL');
    expect(arena.length(row)).toBe(0);
  });

  it('copyPrefix copies the first positions of every kept layer, K and V, and the copy outlives its donor', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9 });
    const arena = pool.addArena('v', layout);
    write(arena, [arena.addRow('donor')], [1], 6);
    const receiver = arena.addRow('receiver');
    arena.copyPrefix(0, receiver, 4);
    expect(arena.length(receiver)).toBe(4);
    write(arena, [receiver], [9], 1); // the receiver goes on from position 4 with its own tokens
    arena.removeRow('donor'); // the receiver moves to row 0
    expect(arena.rowOf('receiver')).toBe(0);
    expect(mismatches(arena, 0, [1, 1, 1, 1, 9])).toBe(0);
    // Nothing beyond the copied prefix came along (position 5 of the donor).
    expect(read(arena, 0, 0, 0, 5, 0)).toBe(0);
  });

  it('copyPrefix refuses a non-empty receiver, the same row, or more tokens than the donor holds', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9 });
    const arena = pool.addArena('v', layout);
    write(arena, [arena.addRow('a')], [1], 3);
    arena.addRow('b');
    expect(() => arena.copyPrefix(0, 1, 4)).toThrow(/copyPrefix/);
    expect(() => arena.copyPrefix(1, 0, 0)).toThrow(/copyPrefix/);
    expect(() => arena.copyPrefix(0, 0, 1)).toThrow(/copyPrefix/);
    expect(() => arena.copyPrefix(0, 2, 1)).toThrow(/copyPrefix/);
  });

  it('throws DS_KV_EXHAUSTED with the numbers when the exact need is over budget, and changes nothing', () => {
    const block = 16;
    const pool = new HostKvCachePool({ budgetBytes: 3 * block * BPT, blockTokens: block });
    const arena = pool.addArena('v', layout);
    write(arena, [arena.addRow('a')], [1], 20); // 2 blocks
    const allocated = pool.allocatedBytes;
    const error = kvError(() => arena.addRow('b')); // 2 rows × 2 blocks > 3 blocks
    expect(error.code).toBe('DS_KV_EXHAUSTED');
    expect(error.message).toContain(`${2 * 2 * block * BPT} bytes`);
    expect(error.message).toContain(`${3 * block * BPT}-byte budget`);
    expect(kvError(() => arena.reserveTokens(49)).code).toBe('DS_KV_EXHAUSTED');
    expect(arena.numRows).toBe(1);
    expect(pool.allocatedBytes).toBe(allocated);
    expect(mismatches(arena, 0, Array(20).fill(1))).toBe(0);
    arena.reserveTokens(48); // exactly the budget
    expect(pool.allocatedBytes).toBe(3 * block * BPT);
  });

  it('takes spare capacity while the budget has room and gives it back when another arena needs it', () => {
    const block = 8;
    const pool = new HostKvCachePool({ budgetBytes: 320 * BPT, blockTokens: block });
    const a = pool.addArena('a', layout);
    for (let i = 0; i < 5; i++) write(a, [a.addRow(`a${i}`)], [i], 9); // 5 rows × 2 blocks = 80 tokens
    expect(a.rowCapacity).toBe(8); // rows double while there is room
    expect(a.allocatedBytes).toBe(8 * 16 * BPT);
    // b's 2 × 104 tokens fit beside a's exact need (80) but not beside a's buffers (128).
    const b = pool.addArena('b', layout);
    b.addRow('b0');
    b.addRow('b1');
    write(b, [0, 1], [7, 8], 100);
    expect(a.allocatedBytes).toBe(5 * 16 * BPT);
    expect(a.rowCapacity).toBe(5);
    expect(b.allocatedBytes).toBe(2 * 104 * BPT);
    expect(pool.allocatedBytes).toBe(a.allocatedBytes + b.allocatedBytes);
    for (let row = 0; row < 5; row++) expect(mismatches(a, row, Array(9).fill(row))).toBe(0);
    expect(mismatches(b, 1, Array(100).fill(8))).toBe(0);
  });

  it('a reservation survives another arena taking back spare capacity', () => {
    const block = 8;
    const pool = new HostKvCachePool({ budgetBytes: 424 * BPT, blockTokens: block });
    const a = pool.addArena('a', layout);
    for (const id of ['a0', 'a1', 'a2']) a.addRow(id);
    write(a, [0], [1], 3);
    a.reserveTokens(100); // say, a prompt about to be prefilled into row 0
    expect(a.rowCapacity).toBe(4); // one spare row, granted while the budget had room
    expect(a.tokenCapacity).toBe(104);
    const b = pool.addArena('b', layout);
    b.addRow('b0');
    b.reserveTokens(100); // fits only once a gives back its spare row
    expect(a.rowCapacity).toBe(3);
    expect(a.tokenCapacity).toBe(104); // not shrunk to a's 3 cached tokens: the reservation holds
    write(a, [0], [1], 97);
    expect(mismatches(a, 0, Array(100).fill(1))).toBe(0);
    expect(pool.allocatedBytes).toBe((3 * 104 + 104) * BPT);
  });

  it('frees an empty arena and shrinks one that holds more than twice what its rows need', () => {
    const pool = new HostKvCachePool({ budgetBytes: 1e9, blockTokens: 8 });
    const arena = pool.addArena('v', layout);
    for (let i = 0; i < 4; i++) write(arena, [arena.addRow(`s${i}`)], [i], i === 0 ? 100 : 5);
    expect(arena.tokenCapacity).toBeGreaterThanOrEqual(104);
    arena.removeRow('s0'); // the long one: 3 rows × 1 block remain
    expect(arena.allocatedBytes).toBe(3 * 8 * BPT);
    expect(pool.allocatedBytes).toBe(arena.allocatedBytes);
    for (let row = 0; row < 3; row++) {
      expect(mismatches(arena, row, Array(5).fill(Number(arena.sequenceIdAt(row).slice(1))))).toBe(0);
    }
    for (const id of ['s1', 's2', 's3']) arena.removeRow(id);
    expect(arena.allocatedBytes).toBe(0);
    expect(arena.tokenCapacity).toBe(0);
    expect(pool.allocatedBytes).toBe(0);
    expect(pool.usedBytes).toBe(0);
  });

  it('never exceeds the budget, and refuses only what cannot fit, under a seeded mix of operations on three arenas', () => {
    const block = 8;
    const layouts: Record<string, KvLayout> = {
      full: { keptLayers: [0, 1, 2, 3], numKvHeads: 2, headDim: 8, maxSeqLen: 128 },
      pruned: { keptLayers: [1, 3], numKvHeads: 2, headDim: 8, maxSeqLen: 128 },
      wide: { keptLayers: [0], numKvHeads: 4, headDim: 16, maxSeqLen: 64 },
    };
    const budget = 150_000;
    const pool = new HostKvCachePool({ budgetBytes: budget, blockTokens: block });
    const ids = Object.keys(layouts);
    const arenas = ids.map((id) => pool.addArena(id, layouts[id]!));
    // The model the pool must agree with: per arena, rows in order, each a tag per cached position.
    const model = new Map(arenas.map((arena) => [arena, [] as { id: string; tags: number[] }[]]));
    const exactBytes = (arena: HostKvArena, rows: { tags: number[] }[]) =>
      rows.length * blockAligned(Math.max(0, ...rows.map((r) => r.tags.length)), block) * arena.bytesPerToken;
    const wouldFit = (arena: HostKvArena, rows: { tags: number[] }[]) =>
      arenas.reduce(
        (sum, a) => sum + (a === arena ? exactBytes(a, rows) : exactBytes(a, model.get(a)!)),
        0,
      ) <= budget;

    const rng = new SeededRandom(12);
    const pick = <T>(items: T[]): T => items[Math.floor(rng.next() * items.length)]!;
    let nextSequence = 0;
    let refused = 0;
    let gaveBack = 0;
    for (let op = 0; op < 600; op++) {
      const arena = pick(arenas);
      const rows = model.get(arena)!;
      const before = new Map(arenas.map((a) => [a, a.allocatedBytes]));
      const roll = rng.next();
      const attempt = (planned: { tags: number[] }[], run: () => void): void => {
        const fits = wouldFit(arena, planned);
        try {
          run();
          if (!fits) throw new Error(`op ${op} should not have fit`);
        } catch (e) {
          if (!(e instanceof DropserveError) || e.code !== 'DS_KV_EXHAUSTED') throw e;
          expect(fits, `op ${op} refused though its exact need fits`).toBe(false);
          refused++;
        }
      };
      if (rows.length === 0 || roll < 0.3) {
        const id = `s${nextSequence++}`;
        const donors = rows.filter((r) => r.tags.length > 0);
        const donor = donors.length > 0 && rng.next() < 0.3 ? pick(donors) : undefined;
        const planned = [...rows, { id, tags: [] as number[] }];
        attempt(planned, () => {
          const row = arena.addRow(id);
          rows.push(planned.at(-1)!);
          if (donor) {
            const tokens = Math.floor(rng.next() * (donor.tags.length + 1));
            arena.copyPrefix(arena.rowOf(donor.id), row, tokens);
            rows.at(-1)!.tags = donor.tags.slice(0, tokens);
          }
        });
      } else if (roll < 0.75) {
        const chosen = rows.filter(() => rng.next() < 0.6);
        const room = Math.min(...chosen.map((r) => arena.layout.maxSeqLen - r.tags.length));
        if (chosen.length === 0 || room === 0) continue;
        const seqLen = 1 + Math.floor(rng.next() * Math.min(room, 12));
        const tag = nextSequence++;
        const planned = rows.map((r) =>
          chosen.includes(r) ? { tags: [...r.tags, ...Array(seqLen).fill(tag)] } : r,
        );
        attempt(planned, () => {
          write(
            arena,
            chosen.map((r) => arena.rowOf(r.id)),
            chosen.map(() => tag),
            seqLen,
          );
          for (const r of chosen) r.tags.push(...Array(seqLen).fill(tag));
        });
      } else {
        const victim = pick(rows);
        arena.removeRow(victim.id);
        const hole = rows.indexOf(victim);
        const last = rows.pop()!;
        if (last !== victim) rows[hole] = last;
      }
      if (arenas.some((a) => a !== arena && a.allocatedBytes < before.get(a)!)) gaveBack++;

      expect(pool.allocatedBytes).toBeLessThanOrEqual(budget);
      expect(pool.allocatedBytes).toBe(ids.reduce((sum, id) => sum + pool.stats(id).allocatedBytes, 0));
      let used = 0;
      for (const a of arenas) {
        const live = model.get(a)!;
        expect(a.tokenCapacity % block).toBe(0);
        expect(a.numRows).toBe(live.length);
        live.forEach((r, row) => {
          expect(a.sequenceIdAt(row)).toBe(r.id);
          used += blockAligned(r.tags.length, block) * a.bytesPerToken;
        });
      }
      expect(pool.usedBytes).toBe(used);
      let wrong = 0;
      rows.forEach((r, row) => {
        wrong += mismatches(arena, row, r.tags);
      });
      expect(wrong, `op ${op}`).toBe(0);
    }
    // The mix reached both the budget's edge and the give-back path.
    expect(refused).toBeGreaterThan(0);
    expect(gaveBack).toBeGreaterThan(0);
  });
});
