//! The GPU executor: the arena, the KV cache, the weights and the step's scalars allocated on the
//! device once, every launch's buffer addresses resolved once (checked within their regions as
//! the CPU executor checks them), and one step per call: the token ids and `[T, pos]` uploaded,
//! the launches queued, the logits downloaded.
//!
//! `forward_last` runs the launches marked `last_token` (the final norm and the lm_head) for the
//! last token only, with their buffers advanced to its rows and the scalars `[1, pos + T − 1]`
//! (the second scalar slot), as the CPU executor does. A decode step (one token) with graphs on
//! is captured once into a CUDA graph and replayed for every later token: its arguments never
//! change, since the token id and the scalars are rewritten in device memory before each replay.
//!
//! One sequence (one KV cache); a prefill runs the plan directly. The KV cache is not cleared by
//! `reset`: a step writes the rows of its positions before attention reads them and reads no row
//! after its own, so a new conversation overwrites what matters before it is read.

use super::{Device, DevicePtr, GpuLaunch, GpuProgram};
use crate::error::RuntimeError;
use crate::program::{BufRef, Region};

/// Bytes of the scalars buffer: `[T, pos]` for every launch, then `[1, pos + T − 1]` for the
/// last-token launches of `forward_last`.
const SCALAR_BYTES: u64 = 32;

/// What a session needs from a model that runs outside the CPU executor.
pub trait DeviceStep: Send {
    /// The context length.
    fn context(&self) -> u64;
    /// The vocabulary size.
    fn vocab(&self) -> u64;
    /// Forgets the context (see the module doc: nothing on the device needs clearing).
    fn reset(&mut self);
    /// Turns the decode graph on or off (where the device has one).
    fn set_graphs(&mut self, on: bool);
    /// The device's name, for reports.
    fn device_name(&self) -> String;
    /// Runs `tokens` at positions `pos..pos + T`; every token's logits (`T × vocab`).
    fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError>;
    /// Runs `tokens` like `forward`; the last token's logits only.
    fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError>;
}

/// A model on a device: see the module doc.
pub struct GpuExecutor<D: Device> {
    device: D,
    launches: Vec<GpuLaunch>,
    kernels: Vec<String>,
    context: u64,
    vocab: u64,
    tokens: BufRef,
    logits_buf: BufRef,
    arena: DevicePtr,
    scalars: DevicePtr,
    /// Per launch, its buffers' device addresses.
    addresses: Vec<Vec<DevicePtr>>,
    /// The arguments of the launch being queued (reused).
    args: Vec<DevicePtr>,
    /// The logits of the last step, downloaded (grown to the most asked for, once).
    logits: Vec<f32>,
    /// Token ids as bytes, and the logits as downloaded (both reused).
    token_bytes: Vec<u8>,
    logit_bytes: Vec<u8>,
    /// Whether decode steps replay a captured graph.
    graphs: bool,
    /// Whether the decode graph has been captured.
    captured: bool,
    weight_bytes: u64,
}

fn gpu_err(message: String) -> RuntimeError {
    RuntimeError::Gpu(message)
}

impl<D: Device> GpuExecutor<D> {
    /// Puts `program` on `device`: allocates the arena, the KV cache and the scalars, uploads the
    /// weights (the host copy is dropped afterwards), and checks every launch's kernel and buffers.
    pub fn new(program: GpuProgram, mut device: D) -> Result<GpuExecutor<D>, RuntimeError> {
        let weights_len = program.weights.len() as u64;
        let sizes = [program.arena_bytes, weights_len, program.kv_bytes];
        check_plan(&program, sizes)?;
        let arena = device.alloc(program.arena_bytes.max(1), "arena")?;
        let kv = device.alloc(program.kv_bytes.max(1), "KV cache")?;
        let weights = device.alloc(weights_len.max(1), "weights")?;
        device.upload(weights, program.weights.as_slice())?;
        let scalars = device.alloc(SCALAR_BYTES, "scalars")?;
        let addresses = program
            .launches
            .iter()
            .map(|g| {
                g.launch
                    .bufs
                    .iter()
                    .map(|b| {
                        let base = match b.region {
                            Region::Arena => arena,
                            Region::Weights => weights,
                            Region::Kv => kv,
                        };
                        base + b.offset
                    })
                    .collect()
            })
            .collect();
        let most_bufs = program.launches.iter().map(|g| g.launch.bufs.len());
        Ok(GpuExecutor {
            args: Vec::with_capacity(most_bufs.max().unwrap_or(0) + 1),
            logits: vec![0.0; program.vocab as usize],
            token_bytes: Vec::new(),
            logit_bytes: Vec::new(),
            kernels: program.kernels,
            launches: program.launches,
            context: program.context,
            vocab: program.vocab,
            tokens: program.tokens,
            logits_buf: program.logits,
            arena,
            scalars,
            addresses,
            graphs: true,
            captured: false,
            weight_bytes: weights_len,
            device,
        })
    }

    /// Turns the decode graph on (the default) or off (every launch queued each step).
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, to measure it (`bitnetc bench --backend cuda`).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The launches.
    pub fn launches(&self) -> &[GpuLaunch] {
        &self.launches
    }

    /// The kernels' entry names, by index.
    pub fn kernels(&self) -> &[String] {
        &self.kernels
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Runs `tokens` at positions `pos..pos + T` and returns the logits of every token.
    pub fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let n = tokens.len() * self.vocab as usize;
        self.step(tokens, pos, false)?;
        Ok(&self.logits[..n])
    }

    /// Runs `tokens` at positions `pos..pos + T` and returns the last token's logits (`vocab`).
    pub fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let n = self.vocab as usize;
        self.step(tokens, pos, true)?;
        Ok(&self.logits[..n])
    }

    /// Queues launches `indices` in order, `reps` times over, at T = 1, pos = 0, and returns the
    /// device's seconds per round (for measuring kernels: launches of different layers read
    /// different weights, so a round of them is not served from the cache the way one launch
    /// repeated is). It rewrites the scalars, so the next step starts fresh.
    pub fn time_launches(&mut self, indices: &[usize], reps: u32) -> Result<f64, RuntimeError> {
        self.write_scalars(1, 0)?;
        for &i in indices {
            self.queue(i, 1, false)?;
        }
        self.device.start_timer()?;
        for _ in 0..reps {
            for &i in indices {
                self.queue(i, 1, false)?;
            }
        }
        Ok(self.device.stop_timer()? / f64::from(reps.max(1)))
    }

    fn check_tokens(&self, tokens: &[i64], pos: u64) -> Result<(), RuntimeError> {
        let t = tokens.len();
        if t == 0 {
            return Err(RuntimeError::Empty);
        }
        if pos
            .checked_add(t as u64)
            .is_none_or(|end| end > self.context)
        {
            return Err(RuntimeError::ContextOverflow {
                pos,
                tokens: t,
                context: self.context,
            });
        }
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, id)| **id < 0 || **id as u64 >= self.vocab)
        {
            return Err(RuntimeError::BadToken {
                id,
                index,
                vocab: self.vocab,
            });
        }
        Ok(())
    }

    fn write_scalars(&mut self, t: u64, pos: u64) -> Result<(), RuntimeError> {
        let values = [t as i64, pos as i64, 1, (pos + t - 1) as i64];
        let mut bytes = [0u8; SCALAR_BYTES as usize];
        for (chunk, v) in bytes.chunks_exact_mut(8).zip(values) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        self.device.upload(self.scalars, &bytes)
    }

    fn step(&mut self, tokens: &[i64], pos: u64, last: bool) -> Result<(), RuntimeError> {
        self.check_tokens(tokens, pos)?;
        let t = tokens.len() as u64;
        self.token_bytes.clear();
        for id in tokens {
            self.token_bytes.extend_from_slice(&id.to_le_bytes());
        }
        let at = self.arena + self.tokens.offset;
        self.device.upload(at, &self.token_bytes)?;
        self.write_scalars(t, pos)?;
        if last && t == 1 && self.graphs {
            if !self.captured {
                self.device.begin_capture()?;
                let queued = (0..self.launches.len()).try_for_each(|i| self.queue(i, 1, true));
                // End the capture even when a launch failed, so the stream is usable again.
                let ended = self.device.end_capture();
                queued?;
                ended?;
                self.captured = true;
            }
            self.device.replay()?;
        } else {
            for i in 0..self.launches.len() {
                self.queue(i, t, last)?;
            }
        }
        let (first_row, rows) = if last { (t - 1, 1) } else { (0, t) };
        let n = (rows * self.vocab) as usize;
        if self.logits.len() < n {
            self.logits.resize(n, 0.0);
        }
        let src = self.arena + self.logits_buf.offset + first_row * self.vocab * 4;
        self.logit_bytes.resize(n * 4, 0);
        self.device.download(&mut self.logit_bytes, src)?;
        for (v, chunk) in self.logits.iter_mut().zip(self.logit_bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(())
    }

    /// Queues launch `i` for a step of `t` tokens (`last`: the last-token launches for the last
    /// token alone).
    fn queue(&mut self, i: usize, t: u64, last: bool) -> Result<(), RuntimeError> {
        let (Some(g), Some(addresses)) = (self.launches.get(i), self.addresses.get(i)) else {
            return Err(gpu_err(format!("no launch {i}")));
        };
        self.args.clear();
        let tail = match (&g.launch.last_token, last) {
            (Some(strides), true) => Some(strides),
            _ => None,
        };
        for (bi, &a) in addresses.iter().enumerate() {
            let advance = tail
                .and_then(|s| s.get(bi))
                .map_or(0, |&stride| (t - 1) * stride);
            self.args.push(a + advance);
        }
        let (rows, scalars) = match tail {
            Some(_) => (g.launch.rows.count(1), self.scalars + 16),
            None => (g.launch.rows.count(t), self.scalars),
        };
        self.args.push(scalars);
        if rows == 0 {
            return Ok(());
        }
        self.device
            .launch(g.launch.kernel, &g.grid, rows, &self.args)
            .map_err(|e| gpu_err(format!("launch {i} ({}): {e}", g.launch.label)))
    }
}

impl<D: Device + Send> DeviceStep for GpuExecutor<D> {
    fn context(&self) -> u64 {
        self.context
    }

    fn vocab(&self) -> u64 {
        self.vocab
    }

    fn reset(&mut self) {}

    fn set_graphs(&mut self, on: bool) {
        GpuExecutor::set_graphs(self, on);
    }

    fn device_name(&self) -> String {
        self.device.name()
    }

    fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        GpuExecutor::forward(self, tokens, pos)
    }

    fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        GpuExecutor::forward_last(self, tokens, pos)
    }
}

/// Checks every launch's kernel index, buffers (within their regions of `sizes`: arena, weights,
/// KV) and strides, and the token and logits buffers, before anything is allocated.
fn check_plan(program: &GpuProgram, sizes: [u64; 3]) -> Result<(), RuntimeError> {
    for (li, g) in program.launches.iter().enumerate() {
        let l = &g.launch;
        if l.kernel >= program.kernels.len() {
            return Err(RuntimeError::BadKernel {
                launch: li,
                label: l.label.clone(),
                kernel: l.kernel,
                count: program.kernels.len(),
            });
        }
        l.check_buffers(li, sizes)?;
        if let Some(strides) = &l.last_token {
            l.check_strides(li, "last-token", strides, program.context)?;
        }
    }
    let logits_bytes = program
        .context
        .saturating_mul(program.vocab)
        .saturating_mul(4);
    let token_bytes = program.context.saturating_mul(8);
    for (b, need) in [
        (program.tokens, token_bytes),
        (program.logits, logits_bytes),
    ] {
        if b.region != Region::Arena
            || b.bytes < need
            || b.offset.saturating_add(b.bytes) > sizes[0]
        {
            return Err(RuntimeError::BadBuffer {
                launch: 0,
                label: "program inputs/outputs".into(),
                index: 0,
                region: b.region,
                offset: b.offset,
                bytes: b.bytes,
                size: sizes[0],
            });
        }
    }
    Ok(())
}
