//! Typed metadata getters of `GgufFile`. Integer getters accept any integer type whose value fits
//! (a u8 `block_count` reads as u64 as well as a u32 one); float getters accept f32 and f64. Errors
//! name the file, the key, and the expected and found types.

use super::GgufFile;
use super::value::{GgufArray, GgufValue};
use crate::error::FrontendError;

impl GgufFile {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn value(&self, key: &str) -> Result<&GgufValue, FrontendError> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.err(format!("metadata key '{key}' is missing")))
    }

    fn type_err(&self, key: &str, expected: &str, found: &GgufValue) -> FrontendError {
        self.err(format!(
            "metadata key '{key}': expected {expected}, found {}",
            found.type_name()
        ))
    }

    /// `key` as u64: any integer type, if the value is not negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, FrontendError> {
        let v = self.value(key)?;
        v.as_u64().ok_or_else(|| match v.as_i64() {
            Some(n) => self.err(format!(
                "metadata key '{key}': expected a non-negative integer, found {} {n}",
                v.type_name()
            )),
            None => self.type_err(key, "an unsigned integer", v),
        })
    }

    /// `key` as u32: any integer type, if the value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32, FrontendError> {
        let n = self.get_u64(key)?;
        u32::try_from(n)
            .map_err(|_| self.err(format!("metadata key '{key}': {n} does not fit in a u32")))
    }

    /// `key` as usize: any integer type, if the value fits (counts and sizes).
    pub fn get_usize(&self, key: &str) -> Result<usize, FrontendError> {
        let n = self.get_u64(key)?;
        usize::try_from(n)
            .map_err(|_| self.err(format!("metadata key '{key}': {n} does not fit in a usize")))
    }

    /// `key` as i64: any integer type, if the value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64, FrontendError> {
        let v = self.value(key)?;
        v.as_i64().ok_or_else(|| match v {
            GgufValue::U64(n) => self.err(format!(
                "metadata key '{key}': u64 {n} does not fit in an i64"
            )),
            _ => self.type_err(key, "an integer", v),
        })
    }

    /// `key` as f32: an f32, or an f64 rounded to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, FrontendError> {
        let v = self.value(key)?;
        match *v {
            GgufValue::F32(x) => Ok(x),
            GgufValue::F64(x) => Ok(x as f32),
            _ => Err(self.type_err(key, "a float (f32 or f64)", v)),
        }
    }

    /// `key` as f64: an f64, or an f32 widened exactly.
    pub fn get_f64(&self, key: &str) -> Result<f64, FrontendError> {
        let v = self.value(key)?;
        v.as_f64()
            .ok_or_else(|| self.type_err(key, "a float (f32 or f64)", v))
    }

    /// `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, FrontendError> {
        match self.value(key)? {
            GgufValue::Bool(b) => Ok(*b),
            v => Err(self.type_err(key, "bool", v)),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, FrontendError> {
        match self.value(key)? {
            GgufValue::String(s) => Ok(s),
            v => Err(self.type_err(key, "string", v)),
        }
    }

    /// `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&GgufArray, FrontendError> {
        match self.value(key)? {
            GgufValue::Array(a) => Ok(a),
            v => Err(self.type_err(key, "an array", v)),
        }
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], FrontendError> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::String(v)) => Ok(v),
            v => Err(self.type_err(key, "array of string", v)),
        }
    }

    /// `key` as i64s: an array of any integer type whose elements all fit.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, FrontendError> {
        let v = self.value(key)?;
        let GgufValue::Array(a) = v else {
            return Err(self.type_err(key, "an array of integers", v));
        };
        match a.to_i64() {
            Some(Ok(out)) => Ok(out),
            Some(Err(i)) => Err(self.err(format!(
                "metadata key '{key}': element {i} of the {} does not fit in an i64",
                a.type_name()
            ))),
            None => Err(self.type_err(key, "an array of integers", v)),
        }
    }

    /// `key` as f32s: an array of f32, or of f64 rounded to f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, FrontendError> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::F32(v)) => Ok(v.clone()),
            GgufValue::Array(GgufArray::F64(v)) => Ok(v.iter().map(|&x| x as f32).collect()),
            v => Err(self.type_err(key, "an array of f32 or f64", v)),
        }
    }

    /// `general.architecture` (required by the GGUF spec).
    pub fn architecture(&self) -> Result<&str, FrontendError> {
        self.get_str("general.architecture")
    }

    /// `Ok(None)` when `key` is absent, else what `get` returns for it.
    pub(crate) fn optional<'a, T>(
        &'a self,
        key: &str,
        get: impl Fn(&'a GgufFile, &str) -> Result<T, FrontendError>,
    ) -> Result<Option<T>, FrontendError> {
        if self.metadata.contains_key(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}
