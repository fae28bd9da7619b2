/**
 * The contract between the ONNX graph (engine/graph/build-graph.ts), the session wrapper
 * (engine/graph/model-session.ts) and everything that runs the model (generation, scheduler,
 * pruning). Names here are the graph's input and output names.
 *
 * Inputs
 *   input_ids              int64   [B, S]
 *   position_ids           int64   [B, S]          absolute positions (RotaryEmbedding)
 *   attn_keep, mlp_keep    bool    [L]             false = sublayer dropped for the whole batch
 *   attn_lowrank, mlp_lowrank bool [L]            true = dropped sublayer emulated by a low-rank map
 *   attn_emul_bias, mlp_emul_bias  float32 [L, dim]   added in place of a dropped sublayer (zeros = plain drop)
 *   attn_emul_down, mlp_emul_down  float32 [L, dim, R]  low-rank x ↦ x + ((norm(x) · down) · up)
 *   attn_emul_up,   mlp_emul_up    float32 [L, R, dim]  (R = 0 when no low-rank emulation is loaded)
 *   seqlens_k              int32   [B]             per row: total tokens after this run − 1
 *   total_sequence_length  int32   []              max over rows of total tokens after this run
 *   past_key_<l>, past_value_<l>  float32 [B, kvH, P, D]   rows beyond a sequence's length are ignored;
 *                          P = 0 for dropped layers (zero KV bytes)
 *   logits_index           int64   [N]             rows of the flattened [B*S] positions to score
 * Outputs
 *   logits                 float32 [N, vocab]
 *   new_key_<l>, new_value_<l>  float32 [B, S, kvH*D]   this run's K (after RoPE) and V rows, which the
 *                          caller writes into its KV cache; empty for dropped layers
 *   hidden_<k>             float32 [B, S, dim]     residual stream after sublayer k (k = 0..2L, k = 0 is the
 *                          embedding, 2l+1 after attention l, 2l+2 after MLP l); only when built with
 *                          outputHiddenStates
 */
export const GRAPH_INPUT = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  attnKeep: 'attn_keep',
  mlpKeep: 'mlp_keep',
  attnLowRank: 'attn_lowrank',
  mlpLowRank: 'mlp_lowrank',
  attnEmulBias: 'attn_emul_bias',
  mlpEmulBias: 'mlp_emul_bias',
  attnEmulDown: 'attn_emul_down',
  mlpEmulDown: 'mlp_emul_down',
  attnEmulUp: 'attn_emul_up',
  mlpEmulUp: 'mlp_emul_up',
  seqlensK: 'seqlens_k',
  totalSequenceLength: 'total_sequence_length',
  logitsIndex: 'logits_index',
  pastKey: (layer: number): string => `past_key_${layer}`,
  pastValue: (layer: number): string => `past_value_${layer}`,
} as const;

export const GRAPH_OUTPUT = {
  logits: 'logits',
  newKey: (layer: number): string => `new_key_${layer}`,
  newValue: (layer: number): string => `new_value_${layer}`,
  hidden: (index: number): string => `hidden_${index}`,
} as const;

/** Which sublayers run, and what replaces the dropped ones. Fixed for a sequence's whole life. */
export interface SublayerMask {
  attnKeep: boolean[]; // [L]
  mlpKeep: boolean[]; // [L]
  emulation?: Emulation;
}

/** Replacement of dropped sublayers; arrays are per layer and null where a layer has none. */
export interface Emulation {
  attention: (SublayerEmulation | null)[]; // [L]
  mlp: (SublayerEmulation | null)[]; // [L]
}

export type SublayerEmulation =
  | { kind: 'bias'; bias: Float32Array } // [dim]
  | { kind: 'lowrank'; bias?: Float32Array; down: Float32Array; up: Float32Array; rank: number }; // down [dim, r], up [r, dim]

/** One forward run over a batch of rows that share one mask. */
export interface ForwardInput {
  batchSize: number; // B
  seqLen: number; // S (new tokens per row this run)
  inputIds: Int32Array | number[]; // [B*S]
  positionIds: Int32Array | number[]; // [B*S]
  mask: SublayerMask;
  /** Per row: tokens already in the cache before this run. */
  pastLengths: number[]; // [B]
  /**
   * Per layer, the batch's past KV in [B, kvH, pastCapacity, D] layout (JS-owned, fed zero-copy), or
   * null for a dropped layer. pastCapacity ≥ max(pastLengths).
   */
  past: ({ key: Float32Array; value: Float32Array } | null)[];
  pastCapacity: number; // P
  /** Flattened row*S+pos indices whose logits are returned. */
  logitsIndex: number[];
  /** Also fetch hidden_<k> outputs (session must be built with outputHiddenStates). */
  wantHiddenStates?: boolean;
}

export interface ForwardOutput {
  logits: Float32Array; // [N, vocab]
  /** Per layer [B, S, kvDim] K rows after RoPE, null for dropped layers. */
  newKeys: (Float32Array | null)[];
  newValues: (Float32Array | null)[];
  /** [2L+1] of [B, S, dim], when asked for. */
  hiddenStates?: Float32Array[];
}
