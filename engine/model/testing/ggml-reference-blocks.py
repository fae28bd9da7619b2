"""Known answers for dropserve's GGUF block decoders (engine/model/gguf-tensors.test.ts).

Random blocks of every supported block type (fp16 scale fields set to finite values), decoded by
gguf-py, the Python package of llama.cpp (numpy ports of ggml's reference dequantizers). Regenerate
from the repository root with `pip install gguf==0.19.0` and `python engine/model/testing/ggml-reference-blocks.py`.
"""
import numpy as np, json, base64
from gguf.quants import dequantize
from gguf import GGMLQuantizationType as T
rng = np.random.default_rng(7)
# type: (block bytes, values per block, offsets of fp16 fields)
L = {'Q4_0':(18,32,[0]),'Q4_1':(20,32,[0,2]),'Q5_0':(22,32,[0]),'Q5_1':(24,32,[0,2]),'Q8_0':(34,32,[0]),
     'Q2_K':(84,256,[80,82]),'Q3_K':(110,256,[108]),'Q4_K':(144,256,[0,2]),'Q5_K':(176,256,[0,2]),'Q6_K':(210,256,[208])}
out = {}
for name,(bb,bv,offs) in L.items():
    blocks = 512 // bv
    raw = rng.integers(0,256,size=(blocks,bb),dtype=np.uint8)
    for o in offs:
        # fp16 scales in [2^-9, 2^-6), positive or negative
        h = rng.integers(0x1800, 0x2400, size=blocks).astype(np.uint16) | (rng.integers(0,2,size=blocks).astype(np.uint16) << 15)
        raw[:,o] = h & 0xff; raw[:,o+1] = h >> 8
    ref = dequantize(raw.reshape(-1), T[name]).astype(np.float32).reshape(-1)
    out[name] = {'count': int(ref.size), 'blocks': base64.b64encode(raw.tobytes()).decode(), 'values': base64.b64encode(ref.tobytes()).decode()}
json.dump(out, open('engine/model/testing/ggml-reference-blocks.json','w'), indent=2)
print({k: v['count'] for k,v in out.items()})
