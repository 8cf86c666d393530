//! [`Model`]: a model opened once. `Model::open` detects the format, imports the IR and its weights,
//! reads the chat template, and notes where the tokenizer is, to be built only when text is used.
//!
//! ```no_run
//! let model = bitnetc::Model::open("tests/fixtures/hf-tiny/packed".as_ref())?;
//! println!("{} parameters", model.summary.parameters);
//! if let Some(t) = model.tokenizer()? {
//!     println!("{:?}", t.encode("Hello", true)?);
//! }
//! # Ok::<(), bitnetc::Error>(())
//! ```

use crate::Error;
use crate::tokenizer::{LazyTokenizer, TokenizerSource};
use bitnet_frontend::detect::{ModelFormat, detect};
use bitnet_frontend::gguf::GgufFile;
use bitnet_frontend::model::{ImportOptions, ImportedModel, ModelSummary};
use bitnet_ir::{Module, WeightStore};
use bitnet_runtime::chat::{ChatError, ChatTemplate};
use bitnet_runtime::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// How to open a model.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Build the function for this context length (KV-cache rows and the bound of T); the model's
    /// maximum when `None`.
    pub context: Option<u64>,
    /// A post-training quantization of the model's dense projections (lossy), if any.
    pub quantize: Option<bitnet_frontend::model::PostQuantize>,
}

impl OpenOptions {
    /// Opens the model at `path` (a Hugging Face folder, a `.gguf` or an `.onnx` file) with these
    /// options.
    pub fn open(&self, path: &Path) -> Result<Model, Error> {
        self.open_as(path, detect(path)?)
    }

    /// Opens the model at `path` as `format`, which the caller detected
    /// (`bitnet_frontend::detect::detect`), so the files are not probed again.
    pub fn open_as(&self, path: &Path, format: ModelFormat) -> Result<Model, Error> {
        let import = ImportOptions {
            context: self.context,
            quantize: self.quantize,
        };
        let (imported, chat_template, tokenizer) = match format {
            ModelFormat::Hf => {
                let imported = bitnet_frontend::hf::import_hf(path, &import)?;
                let tokenizer = if path.join("tokenizer.json").is_file() {
                    TokenizerSource::HfFolder(path.to_path_buf())
                } else {
                    TokenizerSource::None
                };
                (imported, ChatTemplate::from_hf_dir(path), tokenizer)
            }
            ModelFormat::Gguf => {
                let imported = bitnet_frontend::gguf::import_gguf(path, &import)?;
                // The importer takes a path, so the header is parsed a second time here for the
                // metadata the import does not return; the file stays open for the tokenizer.
                let file = GgufFile::open(path)?;
                let chat_template = Ok(file
                    .get_str("tokenizer.chat_template")
                    .ok()
                    .map(|t| ChatTemplate::from_gguf(t, &path.display().to_string())));
                let tokenizer = if file.metadata().contains_key("tokenizer.ggml.tokens") {
                    TokenizerSource::Gguf(Box::new(file))
                } else {
                    TokenizerSource::None
                };
                (imported, chat_template, tokenizer)
            }
            ModelFormat::Onnx | ModelFormat::Bir => {
                // The frontend's ONNX import is reached through `import_model`, which also gives
                // the error for `.bir` files (IR, not a model).
                let imported = bitnet_frontend::import_model(path, &import)?;
                let sibling = path.with_file_name("tokenizer.json");
                let tokenizer = if sibling.is_file() {
                    TokenizerSource::File(sibling)
                } else {
                    TokenizerSource::None
                };
                (imported, Ok(None), tokenizer)
            }
        };
        let ImportedModel {
            module,
            weights,
            summary,
            ..
        } = imported;
        Ok(Model {
            module,
            weights,
            summary,
            path: path.to_path_buf(),
            format,
            chat_template,
            tokenizer: LazyTokenizer::new(tokenizer),
        })
    }
}

/// A model opened from its files: its IR, the weights the IR names, its description, and what it
/// carries for text (the chat template, the tokenizer).
pub struct Model {
    /// The IR: for decoders, one function `@forward` (see `bitnet_frontend::decoder`). Passes and
    /// compilation change it in place.
    pub module: Module,
    /// The weights the IR's `nn.weight` ops name, read from the model's files on demand.
    pub weights: Box<dyn WeightStore>,
    /// The description (`bitnetc inspect`).
    pub summary: ModelSummary,
    path: PathBuf,
    format: ModelFormat,
    /// Read when the model is opened; an error is reported when the template is asked for.
    chat_template: Result<Option<ChatTemplate>, ChatError>,
    tokenizer: LazyTokenizer,
}

impl Model {
    /// Opens the model at `path` for its own context length (`OpenOptions::open` chooses another).
    pub fn open(path: &Path) -> Result<Model, Error> {
        OpenOptions::default().open(path)
    }

    /// The folder or file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format detected when it was opened.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// The chat template the model declares: a Hugging Face folder's `chat_template.jinja` or
    /// `tokenizer_config.json` `chat_template`, or a GGUF file's `tokenizer.chat_template`;
    /// `None` when it has none. A template field of the wrong form is reported here, not when the
    /// model is opened, so commands without chat never see it.
    pub fn chat_template(&self) -> Result<Option<&ChatTemplate>, Error> {
        match &self.chat_template {
            Ok(t) => Ok(t.as_ref()),
            Err(e) => Err(e.clone().into()),
        }
    }

    /// The tokenizer, built on first use; `None` when the model carries none. A tokenizer file that
    /// cannot be read or is not supported is reported here, not when the model is opened.
    pub fn tokenizer(&self) -> Result<Option<&Tokenizer>, Error> {
        self.tokenizer.get()
    }

    /// The chat template and the tokenizer (still unbuilt unless it was used), for what the model
    /// is compiled into.
    pub(crate) fn into_text(self) -> (Result<Option<ChatTemplate>, ChatError>, LazyTokenizer) {
        (self.chat_template, self.tokenizer)
    }
}
