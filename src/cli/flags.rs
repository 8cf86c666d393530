//! The flags several commands share: value parsers, the precision flags of `compile`, `run`, `chat`
//! and `bench` (`PrecisionArgs`), and the sampling flags of `run` and `chat` (`SamplingArgs`).

use bitnet_backends::cpu::HeadDtype;
use bitnet_frontend::model::PostQuantize;
use bitnet_runtime::sampling::SamplingParams;

/// Parses `--head-dtype` and `--dense-dtype` (`auto`, `bf16`, `f16`, `i8`, `q4`).
pub fn parse_head_dtype(s: &str) -> Result<HeadDtype, String> {
    HeadDtype::parse(s).ok_or_else(|| {
        format!("{s:?}: expected auto (bf16 or f16 when exact, else f32), bf16, f16, i8 or q4")
    })
}

/// Parses `--quantize` (`ternary`).
pub fn parse_quantize(s: &str) -> Result<PostQuantize, String> {
    PostQuantize::parse(s).ok_or_else(|| format!("{s:?}: expected ternary"))
}

/// How the weights of dense matmuls are stored, and whether a dense model is ternarized.
#[derive(clap::Args, Clone, Debug)]
pub struct PrecisionArgs {
    /// How the lm_head stores its weights: auto (bf16 when the weights are exactly bf16, f16 when
    /// they are exactly f16, else f32), bf16 or f16 (rounded to nearest even), i8 (per-row scale,
    /// activations quantized per token) or q4 (4-bit weights in groups of 32 with 6-bit group
    /// multipliers of a per-row scale, 4.25 bits per weight, activations quantized per token; lossy:
    /// `validate` measures its cost). Ignored for artifacts.
    #[arg(long, default_value = "auto", value_parser = parse_head_dtype)]
    pub head_dtype: HeadDtype,
    /// How the other dense projections (a dense checkpoint's attention and MLP) store their
    /// weights: the same choices as --head-dtype. Ternary projections are not affected. Ignored
    /// for artifacts.
    #[arg(long, default_value = "auto", value_parser = parse_head_dtype)]
    pub dense_dtype: HeadDtype,
    /// Post-training quantization of a dense model's projections: `ternary` (BitNet b1.58's
    /// absmean ternary weights and per-token int8 activations). Lossy: the model was not trained
    /// for it. Ignored for artifacts.
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<PostQuantize>,
}

impl PrecisionArgs {
    /// The flags as the audit record states them.
    pub fn audit(&self) -> serde_json::Value {
        serde_json::json!({
            "head_dtype": self.head_dtype.name(),
            "dense_dtype": self.dense_dtype.name(),
            "quantize": self.quantize.map(PostQuantize::name),
        })
    }

    /// Sets these choices in the compile options.
    pub fn apply(&self, options: &mut bitnetc::Options) {
        options.cpu.head = self.head_dtype;
        options.cpu.dense = self.dense_dtype;
        options.quantize = self.quantize;
    }

    /// The compile options of a command that runs a model (`run`, `chat`, `serve`): its
    /// `--context`, these precision flags and `--threads` (0 is refused).
    pub fn run_options(
        &self,
        context: Option<u64>,
        threads: Option<usize>,
    ) -> anyhow::Result<bitnetc::Options> {
        let mut options = bitnetc::Options {
            context,
            ..bitnetc::Options::default()
        };
        self.apply(&mut options);
        if let Some(t) = threads {
            anyhow::ensure!(t != 0, "--threads 0: give at least 1");
            options.cpu.threads = t;
        }
        Ok(options)
    }
}

/// Parses `--threads`: at least 1; more than this machine's cores is capped at the core count
/// with a warning (extra workers would only take turns on the same cores).
pub fn threads(value: &str) -> Result<usize, String> {
    let n: usize = value
        .parse()
        .map_err(|_| format!("'{value}' is not a whole number of threads"))?;
    if n == 0 {
        return Err("0 threads: give at least 1".into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if n > cores {
        eprintln!("warning: --threads {n} is more than the {cores} cores here; using {cores}");
        return Ok(cores);
    }
    Ok(n)
}

/// How the next token is chosen.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Greedy decoding (the default unless --temperature is given).
    #[arg(long, conflicts_with = "temperature")]
    pub greedy: bool,
    /// Sample with this temperature (0 is greedy).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Sample from the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub top_k: usize,
    /// Sample from the most likely tokens that together reach this probability (1: all).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// CTRL repetition penalty (1: none).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repetition_penalty: f32,
    /// The random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampling parameters the flags describe.
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: if self.greedy {
                0.0
            } else {
                self.temperature.unwrap_or(0.0)
            },
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

/// `--head-kl-bound` of `compile`, `run` and `chat`: `--head-dtype auto` measured
/// (`bitnetc::head_choice`).
#[derive(clap::Args, Clone, Debug)]
pub struct HeadBoundArgs {
    /// With --head-dtype auto: also build the lossy lm_heads (q4, i8), measure each one's mean KL
    /// divergence from the exact head on the bundled text (nats per token), and keep the head
    /// that reads the fewest bytes per token within this bound (the exact head when none is).
    /// Costs one compile per head; says which head it chose and why.
    #[arg(long, value_name = "NATS")]
    pub head_kl_bound: Option<f64>,
}

impl HeadBoundArgs {
    /// Measures and sets the head in `options` when a bound is given (none for an artifact, whose
    /// head is fixed); returns the measurement for the audit record.
    pub fn apply(
        &self,
        model: &std::path::Path,
        head_dtype: HeadDtype,
        options: &mut bitnetc::Options,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let Some(bound) = self.head_kl_bound else {
            return Ok(None);
        };
        anyhow::ensure!(
            head_dtype == HeadDtype::Auto,
            "--head-kl-bound chooses the head itself: give it with --head-dtype auto, not {}",
            head_dtype.name()
        );
        eprintln!("measuring the lm_heads of {} …", model.display());
        let mut measure = options.clone();
        measure.on_stage = None;
        let choice = bitnetc::choose_head(model, &measure, bound)
            .map_err(|e| anyhow::anyhow!(e))
            .map_err(|e| e.context(format!("{}", model.display())))?;
        eprintln!("{}", choice.summary());
        options.cpu.head = choice.chosen;
        Ok(Some(choice.json()))
    }
}
