/**
 * The weights are views into `image`, a byte-for-byte copy of the checkpoint file at `path`
 * (llama2.c checkpoints store every tensor as float32 in the layout the graph uses). Given this, the
 * session loads those tensors from the file itself, which onnxruntime maps, instead of copying the
 * in-memory bytes: about a second less start-up for a 110M model and no second copy of the weights.
 * The file must not change while a session built from it is alive, and the views must not be edited
 * in memory before a session is built (it reads the file, not them); edit a copy instead.
 */
export interface WeightFileImage {
  path: string;
  image: ArrayBuffer;
}

/** ArrayBuffers are capped at 4 GiB; larger checkpoints are read tensor by tensor, without an image. */
export const MAX_IMAGE_BYTES = 2 ** 32 - 1;
