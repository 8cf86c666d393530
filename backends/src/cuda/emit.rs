//! Building NVPTX kernels with inkwell: the kernel signature (one global pointer per buffer, then
//! one global pointer to the step's scalars `[T, pos]` as two i64, read once at entry: a captured
//! CUDA graph replays the same arguments while the runtime rewrites the scalars in device memory),
//! special registers, loops and branches, stack variables (promoted to
//! registers by the optimizer), warp and block reductions, and the NVVM intrinsics the kernels use.
//!
//! The same kernels also build for the host (a module whose triple is not NVPTX; see `super::host`),
//! to check their arithmetic without a GPU: there a warp is one lane (no shuffles), a kernel runs
//! one thread per block except the warp-per-row kernels, the thread and block indices are parameters,
//! and `dp4a`, `ex2.approx` and `cvt.rni` become plain LLVM operations with the same results
//! (`ex2.approx` aside: the host uses `llvm.exp2`).
//!
//! Indices and addresses are i64; loops compare signed (every index is below 2^63). Floating-point
//! operations carry no fast-math flags, so LLVM neither reassociates nor contracts them into fused
//! multiply-adds: each f32 operation rounds exactly as the interpreter's does. Division and square
//! root lower to the correctly rounded `div.rn` / `rcp.rn` / `sqrt.rn`.

use inkwell::basic_block::BasicBlock;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue, GlobalValue,
    IntValue, PointerValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};

/// The `ptx_kernel` calling convention (LLVM's `CallingConv::PTX_Kernel`): the function becomes a
/// PTX `.entry`.
pub const PTX_KERNEL_CC: u32 = 71;
/// Global memory.
pub const GLOBAL: u16 = 1;
/// Shared memory.
pub const SHARED: u16 = 3;
/// Lanes per warp.
pub const WARP: u64 = 32;

/// A code-generation failure (LLVM's builder refused an instruction): a compiler bug.
#[derive(Debug)]
pub struct Cg(pub String);

impl From<BuilderError> for Cg {
    fn from(e: BuilderError) -> Cg {
        Cg(e.to_string())
    }
}

/// Results of kernel emission.
pub type R<T> = Result<T, Cg>;

/// One kernel being built.
pub struct Kb<'a, 'ctx> {
    /// The LLVM context.
    pub cx: &'ctx Context,
    /// The module the kernel goes into.
    pub m: &'a Module<'ctx>,
    /// The instruction builder.
    pub b: Builder<'ctx>,
    /// The kernel.
    pub f: FunctionValue<'ctx>,
    /// Buffers of the kernel (its first parameters).
    bufs: u32,
    /// Built for the host (see the module doc) rather than NVPTX.
    pub host: bool,
    /// On the host, the buffer pointers loaded from the table parameter.
    host_bufs: Vec<PointerValue<'ctx>>,
    /// On NVPTX, `T` and `pos` loaded at entry from the scalars pointer (the last parameter).
    scalars: Option<(IntValue<'ctx>, IntValue<'ctx>)>,
    /// The entry block, where stack variables go.
    entry: BasicBlock<'ctx>,
}

impl<'a, 'ctx> Kb<'a, 'ctx> {
    /// Declares kernel `name` with `bufs` buffer pointers, `T` and `pos`, and positions the builder
    /// in its body.
    pub fn kernel(cx: &'ctx Context, m: &'a Module<'ctx>, name: &str, bufs: u32) -> R<Self> {
        let host = !m
            .get_triple()
            .as_str()
            .to_string_lossy()
            .starts_with("nvptx");
        let i64t = cx.i64_type();
        let b = cx.create_builder();
        let f = if host {
            // (bufs table, T, pos, block, thread)
            let ptr = cx.ptr_type(AddressSpace::default());
            let params = [
                ptr.into(),
                i64t.into(),
                i64t.into(),
                i64t.into(),
                i64t.into(),
            ];
            m.add_function(name, cx.void_type().fn_type(&params, false), None)
        } else {
            let ptr = cx.ptr_type(AddressSpace::from(GLOBAL));
            // The buffers, then the scalars `[T, pos]`.
            let params: Vec<_> = (0..=bufs).map(|_| ptr.into()).collect();
            let f = m.add_function(name, cx.void_type().fn_type(&params, false), None);
            f.set_call_conventions(PTX_KERNEL_CC);
            f
        };
        let entry = cx.append_basic_block(f, "entry");
        let body = cx.append_basic_block(f, "body");
        b.position_at_end(entry);
        let mut host_bufs = Vec::new();
        let mut scalars = None;
        if !host {
            let table = f
                .get_nth_param(bufs)
                .ok_or_else(|| Cg("no scalars pointer".into()))?
                .into_pointer_value();
            let t = b.build_load(i64t, table, "T")?.into_int_value();
            let one = i64t.const_int(1, false);
            // SAFETY: an LLVM `getelementptr` to the second of the two scalars the runtime passes.
            let p = unsafe { b.build_gep(i64t, table, &[one], "pos_slot") }?;
            let pos = b.build_load(i64t, p, "pos")?.into_int_value();
            scalars = Some((t, pos));
        }
        if host {
            let table = f
                .get_nth_param(0)
                .ok_or_else(|| Cg("no buffer table".into()))?
                .into_pointer_value();
            let ptr = cx.ptr_type(AddressSpace::default());
            for i in 0..bufs {
                let idx = i64t.const_int(u64::from(i), false);
                // SAFETY: an LLVM `getelementptr` into the host driver's table of `bufs` pointers.
                let p = unsafe { b.build_gep(ptr, table, &[idx], "slot") }?;
                host_bufs.push(b.build_load(ptr, p, "buf")?.into_pointer_value());
            }
        }
        b.build_unconditional_branch(body)?;
        b.position_at_end(body);
        Ok(Kb {
            cx,
            m,
            b,
            f,
            bufs,
            host,
            host_bufs,
            scalars,
            entry,
        })
    }

    /// Lanes per warp: 32, or 1 on the host.
    pub fn warp(&self) -> u64 {
        if self.host { 1 } else { WARP }
    }

    /// Buffer `i`.
    pub fn buf(&self, i: u32) -> R<PointerValue<'ctx>> {
        if self.host {
            return self
                .host_bufs
                .get(i as usize)
                .copied()
                .ok_or_else(|| Cg(format!("no buffer {i}")));
        }
        self.f
            .get_nth_param(i)
            .filter(|_| i < self.bufs)
            .map(|p| p.into_pointer_value())
            .ok_or_else(|| Cg(format!("no buffer {i}")))
    }

    /// The token count of this call.
    pub fn t(&self) -> R<IntValue<'ctx>> {
        match self.scalars {
            Some((t, _)) => Ok(t),
            None => self.param_i64(1),
        }
    }

    /// The position of token 0.
    pub fn pos(&self) -> R<IntValue<'ctx>> {
        match self.scalars {
            Some((_, pos)) => Ok(pos),
            None => self.param_i64(2),
        }
    }

    fn param_i64(&self, i: u32) -> R<IntValue<'ctx>> {
        self.f
            .get_nth_param(i)
            .map(|p| p.into_int_value())
            .ok_or_else(|| Cg(format!("no parameter {i}")))
    }

    /// Ends the kernel.
    pub fn finish(&self) -> R<()> {
        self.b.build_return(None)?;
        Ok(())
    }

    // ---- constants and types ----

    /// An i64 constant.
    pub fn i64c(&self, v: i64) -> IntValue<'ctx> {
        self.cx.i64_type().const_int(v as u64, true)
    }

    /// An i32 constant.
    pub fn i32c(&self, v: i32) -> IntValue<'ctx> {
        self.cx.i32_type().const_int(v as u32 as u64, false)
    }

    /// An f32 constant.
    pub fn f32c(&self, v: f32) -> FloatValue<'ctx> {
        self.cx.f32_type().const_float(f64::from(v))
    }

    /// An f64 constant.
    pub fn f64c(&self, v: f64) -> FloatValue<'ctx> {
        self.cx.f64_type().const_float(v)
    }

    // ---- special registers ----

    fn sreg(&self, name: &str) -> R<IntValue<'ctx>> {
        let v = self.call(
            &format!("llvm.nvvm.read.ptx.sreg.{name}"),
            self.cx.i32_type().into(),
            &[],
        )?;
        Ok(self
            .b
            .build_int_z_extend(v.into_int_value(), self.cx.i64_type(), name)?)
    }

    /// The thread's index in its block (x).
    pub fn tid(&self) -> R<IntValue<'ctx>> {
        if self.host {
            return self.param_i64(4);
        }
        self.sreg("tid.x")
    }

    /// The block's index in the grid (x).
    pub fn block_id(&self) -> R<IntValue<'ctx>> {
        if self.host {
            return self.param_i64(3);
        }
        self.sreg("ctaid.x")
    }

    // ---- calls ----

    /// Calls function `name` (declared on first use) returning `ret`.
    pub fn call(
        &self,
        name: &str,
        ret: BasicTypeEnum<'ctx>,
        args: &[BasicValueEnum<'ctx>],
    ) -> R<BasicValueEnum<'ctx>> {
        let f = self.declare(name, Some(ret), args)?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b
            .build_call(f, &args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| Cg(format!("{name} returned nothing")))
    }

    /// Calls the void function `name` (declared on first use).
    pub fn call_void(&self, name: &str, args: &[BasicValueEnum<'ctx>]) -> R<()> {
        let f = self.declare(name, None, args)?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b.build_call(f, &args, "")?;
        Ok(())
    }

    fn declare(
        &self,
        name: &str,
        ret: Option<BasicTypeEnum<'ctx>>,
        args: &[BasicValueEnum<'ctx>],
    ) -> R<FunctionValue<'ctx>> {
        if let Some(f) = self.m.get_function(name) {
            return Ok(f);
        }
        let params: Vec<_> = args.iter().map(|a| a.get_type().into()).collect();
        let ty = match ret {
            Some(r) => r.fn_type(&params, false),
            None => self.cx.void_type().fn_type(&params, false),
        };
        Ok(self.m.add_function(name, ty, None))
    }

    // ---- memory ----

    /// The address of element `index` of type `ty` from `base`.
    pub fn at(
        &self,
        ty: impl BasicType<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> R<PointerValue<'ctx>> {
        // SAFETY: this builds an LLVM `getelementptr` (no Rust memory is touched); the runtime checks
        // every buffer's bounds against the launch plan before a kernel runs.
        Ok(unsafe { self.b.build_gep(ty, base, &[index], "p") }?)
    }

    /// Loads element `index` of type `ty` from `base`.
    pub fn load(
        &self,
        ty: impl BasicType<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> R<BasicValueEnum<'ctx>> {
        let p = self.at(ty.as_basic_type_enum(), base, index)?;
        Ok(self.b.build_load(ty, p, "v")?)
    }

    /// Stores `v` at element `index` (of `v`'s type) from `base`.
    pub fn store(
        &self,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
        v: impl BasicValue<'ctx>,
    ) -> R<()> {
        let v = v.as_basic_value_enum();
        let p = self.at(v.get_type(), base, index)?;
        self.b.build_store(p, v)?;
        Ok(())
    }

    /// Loads a `ty` (a vector) at `p`, which is aligned to `align` bytes.
    pub fn load_aligned(
        &self,
        ty: impl BasicType<'ctx>,
        p: PointerValue<'ctx>,
        align: u32,
    ) -> R<BasicValueEnum<'ctx>> {
        let v = self.b.build_load(ty, p, "vec")?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(align).map_err(|e| Cg(e.to_string()))?;
        }
        Ok(v)
    }

    /// Loads an f32 element.
    pub fn load_f32(&self, base: PointerValue<'ctx>, i: IntValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.load(self.cx.f32_type(), base, i)?.into_float_value())
    }

    /// A stack variable of type `ty` holding `init` (in the entry block; SROA promotes it).
    pub fn var(&self, ty: impl BasicType<'ctx>, init: impl BasicValue<'ctx>) -> R<Var<'ctx>> {
        let here = self.b.get_insert_block();
        match self.entry.get_first_instruction() {
            Some(i) => self.b.position_before(&i),
            None => self.b.position_at_end(self.entry),
        }
        let ty = ty.as_basic_type_enum();
        let p = self.b.build_alloca(ty, "var")?;
        if let Some(h) = here {
            self.b.position_at_end(h);
        }
        self.b.build_store(p, init.as_basic_value_enum())?;
        Ok(Var { p, ty })
    }

    /// Reads a variable.
    pub fn get(&self, v: &Var<'ctx>) -> R<BasicValueEnum<'ctx>> {
        Ok(self.b.build_load(v.ty, v.p, "get")?)
    }

    /// Writes a variable.
    pub fn set(&self, v: &Var<'ctx>, x: impl BasicValue<'ctx>) -> R<()> {
        self.b.build_store(v.p, x.as_basic_value_enum())?;
        Ok(())
    }

    /// A block-shared array of `n` elements of `ty`, private to this kernel.
    pub fn shared(&self, ty: impl BasicType<'ctx>, n: u32, tag: &str) -> R<PointerValue<'ctx>> {
        let name = format!("{}.{tag}", self.f.get_name().to_string_lossy());
        let arr = ty.array_type(n);
        let g: GlobalValue = self.m.add_global(arr, Some(self.shared_space()), &name);
        g.set_linkage(Linkage::Internal);
        g.set_initializer(&arr.get_undef());
        g.set_alignment(16);
        Ok(g.as_pointer_value())
    }

    fn shared_space(&self) -> AddressSpace {
        if self.host {
            AddressSpace::default()
        } else {
            AddressSpace::from(SHARED)
        }
    }

    /// The block's dynamic shared memory (`extern __shared__`), as a pointer to f32; on the host, a
    /// static array of `host_elems` f32 private to this kernel.
    pub fn dynamic_shared(&self, host_elems: u32) -> R<PointerValue<'ctx>> {
        if self.host {
            return self.shared(self.cx.f32_type(), host_elems, "dynamic");
        }
        const NAME: &str = "bitnet_dynamic_shared";
        if let Some(g) = self.m.get_global(NAME) {
            return Ok(g.as_pointer_value());
        }
        let arr = self.cx.f32_type().array_type(0);
        let g = self
            .m
            .add_global(arr, Some(AddressSpace::from(SHARED)), NAME);
        g.set_linkage(Linkage::External);
        g.set_alignment(16);
        Ok(g.as_pointer_value())
    }

    /// Waits for every thread of the block (`bar.sync 0`).
    pub fn barrier(&self) -> R<()> {
        if self.host {
            // One thread per block: nothing to wait for.
            return Ok(());
        }
        self.call_void(
            "llvm.nvvm.barrier.cta.sync.aligned.all",
            &[self.i32c(0).into()],
        )
    }

    // ---- control flow ----

    /// `for i in (start..end).step_by(step)` (signed compare), calling `body` with `i`.
    pub fn for_range(
        &self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: IntValue<'ctx>,
        mut body: impl FnMut(IntValue<'ctx>) -> R<()>,
    ) -> R<()> {
        let pre = self.block()?;
        let head = self.cx.append_basic_block(self.f, "loop");
        let inner = self.cx.append_basic_block(self.f, "loop.body");
        let exit = self.cx.append_basic_block(self.f, "loop.exit");
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(self.cx.i64_type(), "i")?;
        phi.add_incoming(&[(&start, pre)]);
        let i = phi.as_basic_value().into_int_value();
        let c = self
            .b
            .build_int_compare(IntPredicate::SLT, i, end, "more")?;
        self.b.build_conditional_branch(c, inner, exit)?;
        self.b.position_at_end(inner);
        body(i)?;
        let next = self.b.build_int_add(i, step, "next")?;
        let latch = self.block()?;
        self.b.build_unconditional_branch(head)?;
        phi.add_incoming(&[(&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    /// `if cond { body }`.
    pub fn if_then(&self, cond: IntValue<'ctx>, body: impl FnOnce() -> R<()>) -> R<()> {
        let then = self.cx.append_basic_block(self.f, "then");
        let join = self.cx.append_basic_block(self.f, "join");
        self.b.build_conditional_branch(cond, then, join)?;
        self.b.position_at_end(then);
        body()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(join);
        Ok(())
    }

    fn block(&self) -> R<BasicBlock<'ctx>> {
        self.b
            .get_insert_block()
            .ok_or_else(|| Cg("the builder is not in a block".into()))
    }

    // ---- arithmetic shorthands ----

    /// `a + b` (integers).
    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_add(a, b, "add")?)
    }

    /// `a · b` (integers).
    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_mul(a, b, "mul")?)
    }

    /// `a / b` (unsigned integers).
    pub fn udiv(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_unsigned_div(a, b, "div")?)
    }

    /// `a mod b` (unsigned integers).
    pub fn urem(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_unsigned_rem(a, b, "rem")?)
    }

    /// `a < b` (signed).
    pub fn lt(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_compare(IntPredicate::SLT, a, b, "lt")?)
    }

    /// `a == b`.
    pub fn eq(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_compare(IntPredicate::EQ, a, b, "eq")?)
    }

    /// `a + b` (floats).
    pub fn fadd(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_add(a, b, "fadd")?)
    }

    /// `a − b` (floats).
    pub fn fsub(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_sub(a, b, "fsub")?)
    }

    /// `a · b` (floats).
    pub fn fmul(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_mul(a, b, "fmul")?)
    }

    /// `a / b` (floats, correctly rounded).
    pub fn fdiv(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_div(a, b, "fdiv")?)
    }

    /// `max(a, b)` where a NaN operand loses (as `f32::max`).
    pub fn fmax(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let ty = a.get_type();
        let name = if ty == self.cx.f64_type() {
            "llvm.maxnum.f64"
        } else {
            "llvm.maxnum.f32"
        };
        Ok(self
            .call(name, ty.into(), &[a.into(), b.into()])?
            .into_float_value())
    }

    /// `a > b` (ordered).
    pub fn fgt(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self
            .b
            .build_float_compare(FloatPredicate::OGT, a, b, "fgt")?)
    }

    /// `|a|` (f32).
    pub fn fabs(&self, a: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .call("llvm.fabs.f32", self.cx.f32_type().into(), &[a.into()])?
            .into_float_value())
    }

    /// `a` widened to f64.
    pub fn to_f64(&self, a: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_ext(a, self.cx.f64_type(), "ext")?)
    }

    /// `a` rounded to f32.
    pub fn to_f32(&self, a: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_trunc(a, self.cx.f32_type(), "trunc")?)
    }

    /// The i32 `a` as f32 (exact below 2^24, round to nearest even above).
    pub fn i32_to_f32(&self, a: IntValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .b
            .build_signed_int_to_float(a, self.cx.f32_type(), "itof")?)
    }

    /// `e^x` in f32 through `ex2.approx` (`2^(x·log2 e)`): about 2 ulp, not the interpreter's f64
    /// `exp`.
    pub fn exp_approx(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let y = self.fmul(x, self.f32c(std::f32::consts::LOG2_E))?;
        let name = if self.host {
            "llvm.exp2.f32"
        } else {
            "llvm.nvvm.ex2.approx.f32"
        };
        Ok(self
            .call(name, self.cx.f32_type().into(), &[y.into()])?
            .into_float_value())
    }

    // ---- integer dot products ----

    /// `c + Σ_l a.byte[l] · b.byte[l]` over the four signed bytes of `a` and `b` (`dp4a.s32.s32`).
    pub fn dp4a(
        &self,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
        c: IntValue<'ctx>,
    ) -> R<IntValue<'ctx>> {
        if self.host {
            let i8t = self.cx.i8_type();
            let i32t = self.cx.i32_type();
            let mut acc = c;
            for l in 0..4 {
                let byte = |x: IntValue<'ctx>| -> R<IntValue<'ctx>> {
                    let s = self.b.build_right_shift(x, self.i32c(8 * l), false, "s")?;
                    let t = self.b.build_int_truncate(s, i8t, "t")?;
                    Ok(self.b.build_int_s_extend(t, i32t, "e")?)
                };
                let p = self.b.build_int_mul(byte(a)?, byte(b)?, "p")?;
                acc = self.b.build_int_add(acc, p, "acc")?;
            }
            return Ok(acc);
        }
        Ok(self
            .call(
                "llvm.nvvm.idp4a.s.s",
                self.cx.i32_type().into(),
                &[a.into(), b.into(), c.into()],
            )?
            .into_int_value())
    }

    /// `x` rounded to the nearest integer, ties to even, as i32: saturating, NaN → 0
    /// (`cvt.rni.s32.f32`).
    pub fn f2i_rn(&self, x: FloatValue<'ctx>) -> R<IntValue<'ctx>> {
        let i32t = self.cx.i32_type();
        if self.host {
            let r = self.call("llvm.rint.f32", self.cx.f32_type().into(), &[x.into()])?;
            return Ok(self
                .call("llvm.fptosi.sat.i32.f32", i32t.into(), &[r])?
                .into_int_value());
        }
        Ok(self
            .call("llvm.nvvm.f2i.rn", i32t.into(), &[x.into()])?
            .into_int_value())
    }

    // ---- warp and block reductions ----

    /// Every lane's `v` combined over the warp with `op` by butterfly shuffles (every lane gets the
    /// result). `v` is i32 or f32 (shuffled as 32 bits) or f64 (as two halves).
    pub fn warp_reduce(
        &self,
        v: BasicValueEnum<'ctx>,
        op: impl Fn(BasicValueEnum<'ctx>, BasicValueEnum<'ctx>) -> R<BasicValueEnum<'ctx>>,
    ) -> R<BasicValueEnum<'ctx>> {
        let mut acc = v;
        for shift in [16, 8, 4, 2, 1]
            .into_iter()
            .filter(|&s| (s as u64) < self.warp())
        {
            let other = self.shuffle_xor(acc, shift)?;
            acc = op(acc, other)?;
        }
        Ok(acc)
    }

    fn shuffle_xor(&self, v: BasicValueEnum<'ctx>, lane_mask: i32) -> R<BasicValueEnum<'ctx>> {
        let i32t = self.cx.i32_type();
        let shfl = |x: IntValue<'ctx>| -> R<IntValue<'ctx>> {
            Ok(self
                .call(
                    "llvm.nvvm.shfl.sync.bfly.i32",
                    i32t.into(),
                    &[
                        self.i32c(-1).into(),
                        x.into(),
                        self.i32c(lane_mask).into(),
                        self.i32c(31).into(),
                    ],
                )?
                .into_int_value())
        };
        let ty = v.get_type();
        if ty == self.cx.f64_type().into() || ty == self.cx.i64_type().into() {
            let i64t = self.cx.i64_type();
            let bits = self.b.build_bit_cast(v, i64t, "bits")?.into_int_value();
            let lo = self.b.build_int_truncate(bits, i32t, "lo")?;
            let hi = self.b.build_right_shift(bits, self.i64c(32), false, "hi")?;
            let hi = self.b.build_int_truncate(hi, i32t, "hi32")?;
            let (lo, hi) = (shfl(lo)?, shfl(hi)?);
            let lo = self.b.build_int_z_extend(lo, i64t, "lo64")?;
            let hi = self.b.build_int_z_extend(hi, i64t, "hi64")?;
            let hi = self.b.build_left_shift(hi, self.i64c(32), "hi")?;
            let bits = self.b.build_or(lo, hi, "or")?;
            return Ok(self.b.build_bit_cast(bits, ty, "back")?);
        }
        let bits = self.b.build_bit_cast(v, i32t, "bits")?.into_int_value();
        let r = shfl(bits)?;
        Ok(self.b.build_bit_cast(r, ty, "back")?)
    }

    /// `v` combined with `op` over the whole block of `threads` threads (a multiple of 32, at most
    /// 1024): warp reductions, then the warps' results through shared memory. Every thread gets
    /// the result. Contains barriers: every thread of the block must call it.
    pub fn block_reduce(
        &self,
        v: BasicValueEnum<'ctx>,
        threads: u64,
        tag: &str,
        op: impl Fn(BasicValueEnum<'ctx>, BasicValueEnum<'ctx>) -> R<BasicValueEnum<'ctx>>,
    ) -> R<BasicValueEnum<'ctx>> {
        let w = self.warp_reduce(v, &op)?;
        let warps = threads.div_ceil(self.warp());
        if warps <= 1 {
            return Ok(w);
        }
        let ty = v.get_type();
        let slots = self.shared(ty, 32, tag)?;
        let tid = self.tid()?;
        let lane = self.urem(tid, self.i64c(self.warp() as i64))?;
        let warp = self.udiv(tid, self.i64c(self.warp() as i64))?;
        self.if_then(self.eq(lane, self.i64c(0))?, || {
            let p = self.at(ty, slots, warp)?;
            self.b.build_store(p, w)?;
            Ok(())
        })?;
        self.barrier()?;
        let mut acc = self.load(ty, slots, self.i64c(0))?;
        for i in 1..warps {
            let x = self.load(ty, slots, self.i64c(i as i64))?;
            acc = op(acc, x)?;
        }
        // No thread may overwrite the slots (a later reduction) before every thread has read them.
        self.barrier()?;
        Ok(acc)
    }
}

/// A stack variable.
#[derive(Clone, Copy)]
pub struct Var<'ctx> {
    p: PointerValue<'ctx>,
    ty: BasicTypeEnum<'ctx>,
}
