//! A small GGUF writer for the GGUF tests: it writes whatever it is given (also invalid things: any
//! version, type ids, dims and raw values), lays tensors out as gguf-py does (each at the next aligned
//! offset), and records where each header field landed so that tests can patch single fields, plus
//! encoders for the block formats written from formats.md §4.3–4.5 (independently of the reader).

#![allow(dead_code)]

use half::f16;

/// A metadata value to write. `Raw` writes any type id followed by arbitrary bytes.
#[derive(Clone, Debug)]
pub enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Element type id and elements (written without their type ids, as GGUF does).
    Arr(u32, Vec<V>),
    U64(u64),
    I64(i64),
    F64(f64),
    Raw(u32, Vec<u8>),
}

pub fn s(x: &str) -> V {
    V::Str(x.to_string())
}

pub fn str_arr(xs: &[&str]) -> V {
    V::Arr(8, xs.iter().map(|x| s(x)).collect())
}

impl V {
    fn type_id(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
            V::Raw(t, _) => *t,
        }
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(x) => out.push(*x),
            V::I8(x) => out.extend(x.to_le_bytes()),
            V::U16(x) => out.extend(x.to_le_bytes()),
            V::I16(x) => out.extend(x.to_le_bytes()),
            V::U32(x) => out.extend(x.to_le_bytes()),
            V::I32(x) => out.extend(x.to_le_bytes()),
            V::F32(x) => out.extend(x.to_le_bytes()),
            V::Bool(x) => out.push(u8::from(*x)),
            V::Str(x) => {
                out.extend((x.len() as u64).to_le_bytes());
                out.extend(x.as_bytes());
            }
            V::Arr(t, xs) => {
                out.extend(t.to_le_bytes());
                out.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    x.write_body(out);
                }
            }
            V::U64(x) => out.extend(x.to_le_bytes()),
            V::I64(x) => out.extend(x.to_le_bytes()),
            V::F64(x) => out.extend(x.to_le_bytes()),
            V::Raw(_, b) => out.extend(b),
        }
    }
}

/// A tensor to write.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

/// Where the fields of one metadata entry are.
#[derive(Clone, Debug, Default)]
pub struct KvAt {
    pub key_len: usize,
    pub type_id: usize,
    pub value: usize,
}

/// Where the fields of one tensor info are.
#[derive(Clone, Debug, Default)]
pub struct TensorAt {
    pub name_len: usize,
    pub n_dims: usize,
    pub dims: usize,
    pub type_id: usize,
    pub offset: usize,
    /// File offset of the data.
    pub data: usize,
}

/// Where everything landed.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub version: usize,
    pub tensor_count: usize,
    pub kv_count: usize,
    pub kv: Vec<KvAt>,
    pub tensors: Vec<TensorAt>,
    pub data_start: usize,
}

/// A GGUF file to write.
#[derive(Clone, Debug)]
pub struct Builder {
    pub version: u32,
    pub alignment: usize,
    pub kvs: Vec<(String, V)>,
    pub tensors: Vec<T>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lays the data out with `alignment` (without writing `general.alignment`).
    pub fn aligned(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    pub fn kv(mut self, key: &str, v: V) -> Self {
        self.kvs.push((key.to_string(), v));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(T {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut out = Vec::new();
        let mut at = Layout::default();
        out.extend(b"GGUF");
        at.version = out.len();
        out.extend(self.version.to_le_bytes());
        at.tensor_count = out.len();
        out.extend((self.tensors.len() as u64).to_le_bytes());
        at.kv_count = out.len();
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            let key_len = out.len();
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k.as_bytes());
            let type_id = out.len();
            out.extend(v.type_id().to_le_bytes());
            let value = out.len();
            v.write_body(&mut out);
            at.kv.push(KvAt {
                key_len,
                type_id,
                value,
            });
        }
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            let mut ta = TensorAt {
                name_len: out.len(),
                ..Default::default()
            };
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend(t.name.as_bytes());
            ta.n_dims = out.len();
            out.extend((t.dims.len() as u32).to_le_bytes());
            ta.dims = out.len();
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            ta.type_id = out.len();
            out.extend(t.type_id.to_le_bytes());
            ta.offset = out.len();
            out.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len());
            at.tensors.push(ta);
        }
        at.data_start = align(out.len());
        out.resize(at.data_start, 0);
        for ((t, off), ta) in self.tensors.iter().zip(offsets).zip(&mut at.tensors) {
            ta.data = at.data_start + off;
            out.resize(at.data_start + off, 0);
            out.extend(&t.data);
        }
        (out, at)
    }
}

/// Overwrites 8 bytes at `at` with `v`.
pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Overwrites 4 bytes at `at` with `v`.
pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A deterministic xorshift generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `n` values in {-1, 0, +1}.
    pub fn trits(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.below(3) as i8 - 1).collect()
    }
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// TQ2_0 blocks (formats.md §4.3): element 128h + 32k + m in bits 2k of qs[32h + m], code t + 1.
pub fn encode_tq2_0(t: &[i8], d: &[f16]) -> Vec<u8> {
    let mut out = Vec::new();
    for (blk, d) in t.chunks(256).zip(d) {
        let mut qs = [0u8; 64];
        for (e, &v) in blk.iter().enumerate() {
            let (h, k, m) = (e / 128, (e % 128) / 32, e % 32);
            qs[32 * h + m] |= ((v + 1) as u8) << (2 * k);
        }
        out.extend(qs);
        out.extend(d.to_le_bytes());
    }
    out
}

/// One TQ1_0 byte from up to five codes c = t + 1, first most significant, padded with zeros.
pub fn tq1_0_byte(codes: &[u8]) -> u8 {
    let mut v = 0u32;
    for n in 0..5 {
        v = v * 3 + u32::from(codes.get(n).copied().unwrap_or(0));
    }
    ((v * 256).div_ceil(243)) as u8
}

/// TQ1_0 blocks (formats.md §4.4).
pub fn encode_tq1_0(t: &[i8], d: &[f16]) -> Vec<u8> {
    let mut out = Vec::new();
    for (blk, d) in t.chunks(256).zip(d) {
        let c = |e: usize| (blk[e] + 1) as u8;
        let mut bytes = Vec::new();
        for m in 0..32 {
            bytes.push(tq1_0_byte(
                &(0..5).map(|n| c(m + 32 * n)).collect::<Vec<_>>(),
            ));
        }
        for m in 0..16 {
            bytes.push(tq1_0_byte(
                &(0..5).map(|n| c(160 + m + 16 * n)).collect::<Vec<_>>(),
            ));
        }
        for j in 0..4 {
            bytes.push(tq1_0_byte(
                &(0..4).map(|n| c(240 + j + 4 * n)).collect::<Vec<_>>(),
            ));
        }
        out.extend(bytes);
        out.extend(d.to_le_bytes());
    }
    out
}

/// I2_S, x86 ACT_PARALLEL (formats.md §4.5): element j of a 128-block in byte j % 32 at shift
/// 6 − 2·(j / 32), code t + 1; then the f32 scale and 28 zero bytes.
pub fn encode_i2_s(t: &[i8], scale: f32) -> Vec<u8> {
    let mut out = vec![0u8; t.len() / 4];
    for (i, &v) in t.iter().enumerate() {
        let (b, j) = (i / 128, i % 128);
        out[b * 32 + j % 32] |= ((v + 1) as u8) << (6 - 2 * (j / 32));
    }
    out.extend(scale.to_le_bytes());
    out.extend([0u8; 28]);
    out
}

/// A small valid BitNet file with every metadata value type and one tensor of each ternary type.
pub fn small_bitnet() -> Builder {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let g = f16::from_f32(0.03125);
    Builder::new()
        .kv("general.architecture", s("bitnet-b1.58"))
        .kv("general.name", s("small"))
        .kv("general.file_type", V::U32(40))
        .kv("general.alignment", V::U32(32))
        .kv("test.u8", V::U8(200))
        .kv("test.i8", V::I8(-100))
        .kv("test.u16", V::U16(60000))
        .kv("test.i16", V::I16(-30000))
        .kv("test.i32", V::I32(-5))
        .kv("test.f32", V::F32(0.5))
        .kv("test.bool", V::Bool(true))
        .kv("test.u64", V::U64(u64::MAX))
        .kv("test.i64", V::I64(i64::MIN))
        .kv("test.f64", V::F64(0.1))
        .kv(
            "test.nested",
            V::Arr(
                9,
                vec![
                    V::Arr(4, vec![V::U32(1), V::U32(2)]),
                    V::Arr(8, vec![s("x")]),
                ],
            ),
        )
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv(
            "tokenizer.ggml.tokens",
            str_arr(&["<unk>", "<s>", "</s>", "a", "b"]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            V::Arr(
                5,
                vec![V::I32(2), V::I32(3), V::I32(3), V::I32(1), V::I32(1)],
            ),
        )
        .kv("tokenizer.ggml.merges", str_arr(&["a b"]))
        .kv("tokenizer.ggml.bos_token_id", V::U32(1))
        .kv("tokenizer.ggml.eos_token_id", V::U32(2))
        .kv("tokenizer.ggml.add_bos_token", V::Bool(true))
        .tensor("norm.weight", &[4], 0, f32_bytes(&[1.0, 2.0, -3.0, 0.5]))
        .tensor(
            "tq2.weight",
            &[256, 1],
            35,
            encode_tq2_0(&rng.trits(256), &[g]),
        )
        .tensor(
            "tq1.weight",
            &[256, 1],
            34,
            encode_tq1_0(&rng.trits(256), &[g]),
        )
        .tensor(
            "i2s.weight",
            &[128, 4],
            36,
            encode_i2_s(&rng.trits(512), 0.25),
        )
}
