"""A pool of native threads for the kernels' parallel loops, in which the caller never waits
for a thread that has not started its share.

libgomp's GOMP_parallel ends every parallel region at a barrier that each team thread must
reach. When another process keeps a core busy, a descheduled thread holds every kernel up
for a scheduler time slice, and a 2-thread training step ran slower than on one thread.
Here a job is a number of chunks that participants claim one at a time: the calling thread
claims chunks too, a worker that wakes late finds none left, and the caller waits only for
chunks that are already running.

    void graphc_parallel(void (*task)(i8* record, i64 chunk, i64 thread), i8* record,
                         i64 chunks, i64 threads)

runs task(record, c, t) once for every chunk c in [0, chunks) on at most `threads` threads;
t (0 for the caller, 1.. for workers) is below `threads` and unique among the chunks running
at once, so a task may use slice t of a per-call workspace. One job runs in the pool at a
time; a call made while another thread's job is running runs all its chunks itself.

The job's claim state is one 64-bit word, `generation << 32 | width << 24 | next chunk`: a
claim is a compare-and-swap of that word, so it succeeds only for the job the worker read the
task, record and chunk count of. Publishing a job first moves the generation on with `next`
set to WRITING (nothing can be claimed), then writes the job, then stores its first state.
Workers spin for a while after a job (the next kernel follows within microseconds), then
sleep on a condition variable; the broadcast is made under its mutex, so no wake-up is lost.
After a fork the child starts its own workers. Workers run a job's chunks in the caller's
floating-point mode (x86: its SSE control word, so `gc.set_flush_denormal` reaches them).

A worker can still be descheduled in the middle of a chunk, and the caller must wait for it.
When that costs the caller more than half of its own work (and more than the few hundred
microseconds of a hiccup) twice before a job goes well, the pool backs off: the next jobs run
on the caller alone (16, then 32, ... as slow jobs outnumber good ones), then it tries again; one
slow job among good ones is forgiven.
On a shared machine a step then runs about as fast as on one thread, instead of stalling at
every kernel.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.target import CpuTarget

ENTRY_NAME = "graphc_parallel"
FLUSH_NAME = "graphc_flush_denormals"
# The x86 SSE control word's flush-to-zero (results) and denormals-are-zero (inputs) bits.
FTZ_DAZ = 0x8040
# Participants are numbered in the 8 bits of the state word.
MAX_THREADS = 255
# Cycles (of the CPU's cycle counter) a worker spins for a job before sleeping.
SPIN_CYCLES = 1 << 19
# Jobs run on the caller alone after a job in which it waited long for a worker at two strikes,
# doubled for each strike more (a slow job adds one, a good one takes one off) up to
# MAX_STRIKES.
PENALTY_JOBS = 16
MAX_STRIKES = 10
# A wait shorter than this many cycles (about 0.3-0.45 ms at 2.4-3.3 GHz) never makes a job
# slow: a descheduled worker keeps the caller waiting for a time slice (0.75-3 ms), while
# shorter waits are a VM's or another library's hiccups, or a worker whose core is still
# waking up. Judged on the ratio alone, a process that had run a PyTorch forward backed the
# pool off in most runs; with a floor of 2^17 cycles it still did in 2 of 8: a penalty let
# the worker sleep, the job after its wake-up kept the caller waiting 40-150 us (130-470
# thousand cycles) and backed it off again, and an MLP's inference at batch 64 on two threads
# ran at 0.45-0.49 ms, one thread's speed (0.25-0.34 in the other runs; Zen 3, a VM).
LATE_CYCLES = 1 << 20
# Spins of the caller between yields of its core while it waits for running chunks.
SPINS_PER_YIELD = 256

I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
VOID = ir.VoidType()
I8_PTR = I8.as_pointer()
TASK_TYPE = ir.FunctionType(VOID, [I8_PTR, I64, I64])
_WRITING = 0xFFFFFF
_NEXT_MASK = 0xFFFFFF
# pthread_mutex_t and pthread_cond_t take 40 and 48 bytes on glibc (x86-64 and AArch64);
# all zeros is their static initialiser there.
_SYNC_BYTES = 64


def thread_pool_module(target: CpuTarget) -> ir.Module:
    """Return the module defining graphc_parallel and its workers for target."""
    module = ir.Module(name="graphc_thread_pool")
    pool = _Pool(module, target)
    claim = pool.emit_claim()
    pool.emit_parallel(claim, pool.emit_worker(claim))
    pool.emit_flush_denormals()
    return module


class _Pool:
    """The pool's globals and the external functions its code calls."""

    def __init__(self, module: ir.Module, target: CpuTarget) -> None:
        self.module = module
        self.target = target
        self.state = self._global("graphc_pool_state", I64)
        self.done = self._global("graphc_pool_done", I64)
        self.task = self._global("graphc_pool_task", TASK_TYPE.as_pointer())
        self.record = self._global("graphc_pool_record", I8_PTR)
        self.chunks = self._global("graphc_pool_chunks", I64)
        self.busy = self._global("graphc_pool_busy", I32)
        self.workers = self._global("graphc_pool_workers", I64)
        self.pid = self._global("graphc_pool_pid", I32)
        self.penalty = self._global("graphc_pool_penalty", I64)
        self.mxcsr = self._global("graphc_pool_mxcsr", I32)
        self.strikes = self._global("graphc_pool_strikes", I64)
        # Workers waiting on the condition variable (changed and read under the mutex).
        self.sleepers = self._global("graphc_pool_sleepers", I64)
        self.mutex = self._global("graphc_pool_mutex", ir.ArrayType(I8, _SYNC_BYTES))
        self.cond = self._global("graphc_pool_cond", ir.ArrayType(I8, _SYNC_BYTES))

    def _global(self, name: str, kind: ir.Type) -> ir.GlobalVariable:
        variable = ir.GlobalVariable(self.module, kind, name)
        variable.linkage = "internal"
        variable.initializer = ir.Constant(kind, None)
        variable.align = 64 if isinstance(kind, ir.ArrayType) else 8
        return variable

    def declare(self, name: str, result: ir.Type, *arguments: ir.Type) -> ir.Function:
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, ir.FunctionType(result, arguments), name)

    def sync(self, b: ir.IRBuilder, variable: ir.GlobalVariable) -> ir.Value:
        return b.bitcast(variable, I8_PTR)

    def pause(self, b: ir.IRBuilder) -> None:
        """Tell the core this is a spin loop (x86 pause, AArch64 yield)."""
        arch = self.target.triple.split("-")[0]
        if arch in ("x86_64", "i686", "i386"):
            b.call(self.declare("llvm.x86.sse2.pause", VOID), [])
        elif arch in ("aarch64", "arm64"):
            b.asm(ir.FunctionType(VOID, []), "yield", "", [], side_effect=True)

    @property
    def x86(self) -> bool:
        return self.target.triple.split("-")[0] in ("x86_64", "i686", "i386")

    def read_mxcsr(self, b: ir.IRBuilder) -> ir.Value:
        """Return the x86 SSE control word of the running thread (rounding, FTZ, DAZ)."""
        slot = b.alloca(I32)
        b.call(self.declare("llvm.x86.sse.stmxcsr", VOID, I8_PTR), [b.bitcast(slot, I8_PTR)])
        return b.load(slot)

    def write_mxcsr(self, b: ir.IRBuilder, value: ir.Value) -> None:
        slot = b.alloca(I32)
        b.store(value, slot)
        b.call(self.declare("llvm.x86.sse.ldmxcsr", VOID, I8_PTR), [b.bitcast(slot, I8_PTR)])

    def cycles(self, b: ir.IRBuilder) -> ir.Value:
        return b.call(self.declare("llvm.readcyclecounter", I64), [])

    # -- claiming -------------------------------------------------------------------------

    def emit_claim(self) -> ir.Function:
        """`void claim(i64 generation, i64 thread)`: run chunks of that job until none is left.

        The task, record and chunk count are read after the generation was seen; a claim
        succeeds only while the state word still holds that generation, and a job's fields
        change only after its generation has moved on, so a successful claim used them."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [I64, I64]), "graphc_pool_claim")
        fn.linkage = "internal"
        generation, thread = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        task = b.load(self.task)
        record = b.load(self.record)
        chunks = b.load(self.chunks)
        if self.x86:  # run the job's chunks in the caller's floating-point mode
            self.write_mxcsr(b, b.load(self.mxcsr))
        loop = fn.append_basic_block("claim")
        attempt = fn.append_basic_block("attempt")
        run = fn.append_basic_block("run")
        finished = fn.append_basic_block("finished")
        b.branch(loop)
        b.position_at_end(loop)
        state = b.load_atomic(self.state, "acquire", 8)
        same = b.icmp_unsigned("==", b.lshr(state, ir.Constant(I64, 32)), generation)
        width = b.and_(b.lshr(state, ir.Constant(I64, 24)), ir.Constant(I64, 0xFF))
        chunk = b.and_(state, ir.Constant(I64, _NEXT_MASK))
        open_ = b.and_(
            b.and_(same, b.icmp_unsigned("<", thread, width)),
            b.icmp_unsigned("<", chunk, chunks),
        )
        b.cbranch(open_, attempt, finished)
        b.position_at_end(attempt)
        swapped = b.cmpxchg(
            self.state, state, b.add(state, ir.Constant(I64, 1)), "acq_rel", "acquire"
        )
        b.cbranch(b.extract_value(swapped, 1), run, loop)
        b.position_at_end(run)
        b.call(task, [record, chunk, thread])
        b.atomic_rmw("add", self.done, ir.Constant(I64, 1), "release")
        b.branch(loop)
        b.position_at_end(finished)
        b.ret_void()
        return fn

    # -- workers --------------------------------------------------------------------------

    def emit_worker(self, claim: ir.Function) -> ir.Function:
        """`i8* worker(i8* index)`: wait for each new job, spinning then sleeping, and claim
        chunks of it under its number."""
        fn = ir.Function(self.module, ir.FunctionType(I8_PTR, [I8_PTR]), "graphc_pool_worker")
        fn.linkage = "internal"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        thread = b.ptrtoint(fn.args[0], I64)
        seen = b.alloca(I64)
        b.store(b.lshr(b.load_atomic(self.state, "acquire", 8), ir.Constant(I64, 32)), seen)
        wait = fn.append_basic_block("wait")
        spin = fn.append_basic_block("spin")
        keep_spinning = fn.append_basic_block("keep_spinning")
        sleep = fn.append_basic_block("sleep")
        check = fn.append_basic_block("check")
        doze = fn.append_basic_block("doze")
        woken = fn.append_basic_block("woken")
        work = fn.append_basic_block("work")
        b.branch(wait)

        b.position_at_end(wait)
        start = self.cycles(b)
        b.branch(spin)

        b.position_at_end(spin)
        b.cbranch(self._new_job(b, b.load(seen)), work, keep_spinning)

        b.position_at_end(keep_spinning)
        self.pause(b)
        elapsed = b.sub(self.cycles(b), start)
        b.cbranch(b.icmp_unsigned("<", elapsed, ir.Constant(I64, SPIN_CYCLES)), spin, sleep)

        lock = self.declare("pthread_mutex_lock", I32, I8_PTR)
        unlock = self.declare("pthread_mutex_unlock", I32, I8_PTR)
        cond_wait = self.declare("pthread_cond_wait", I32, I8_PTR, I8_PTR)
        b.position_at_end(sleep)
        mutex, cond = self.sync(b, self.mutex), self.sync(b, self.cond)
        b.call(lock, [mutex])
        b.branch(check)
        b.position_at_end(check)
        b.cbranch(self._new_job(b, b.load(seen)), woken, doze)
        b.position_at_end(doze)
        one = ir.Constant(I64, 1)
        b.store(b.add(b.load(self.sleepers), one), self.sleepers)
        b.call(cond_wait, [cond, mutex])
        b.store(b.sub(b.load(self.sleepers), one), self.sleepers)
        b.branch(check)
        b.position_at_end(woken)
        b.call(unlock, [mutex])
        b.branch(work)

        b.position_at_end(work)
        generation = b.lshr(b.load_atomic(self.state, "acquire", 8), ir.Constant(I64, 32))
        b.store(generation, seen)
        b.call(claim, [generation, thread])
        b.branch(wait)
        return fn

    def _new_job(self, b: ir.IRBuilder, seen: ir.Value) -> ir.Value:
        """Return whether the state holds a published job of another generation than seen."""
        state = b.load_atomic(self.state, "acquire", 8)
        other = b.icmp_unsigned("!=", b.lshr(state, ir.Constant(I64, 32)), seen)
        written = b.icmp_unsigned(
            "!=", b.and_(state, ir.Constant(I64, _NEXT_MASK)), ir.Constant(I64, _WRITING)
        )
        return b.and_(other, written)

    def emit_flush_denormals(self) -> ir.Function:
        """`i32 graphc_flush_denormals(i32 on)`: set or clear FTZ and DAZ in the calling
        thread's SSE control word; return 1, or 0 where the target has no such control."""
        fn = ir.Function(self.module, ir.FunctionType(I32, [I32]), FLUSH_NAME)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if not self.x86:
            b.ret(ir.Constant(I32, 0))
            return fn
        bits = ir.Constant(I32, FTZ_DAZ)
        word = self.read_mxcsr(b)
        cleared = b.and_(word, b.not_(bits))
        on = b.icmp_unsigned("!=", fn.args[0], ir.Constant(I32, 0))
        self.write_mxcsr(b, b.select(on, b.or_(cleared, bits), cleared))
        b.ret(ir.Constant(I32, 1))
        return fn

    # -- the entry point ------------------------------------------------------------------

    def emit_parallel(self, claim: ir.Function, worker: ir.Function) -> ir.Function:
        fn = ir.Function(
            self.module,
            ir.FunctionType(VOID, [TASK_TYPE.as_pointer(), I8_PTR, I64, I64]),
            ENTRY_NAME,
        )
        task, record, chunks, threads = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        alone = fn.append_basic_block("alone")
        try_pool = fn.append_basic_block("try_pool")
        pooled = fn.append_basic_block("pooled")
        width = b.select(
            b.icmp_unsigned("<", threads, ir.Constant(I64, MAX_THREADS)),
            threads,
            ir.Constant(I64, MAX_THREADS),
        )
        wide = b.and_(
            b.icmp_signed(">", width, ir.Constant(I64, 1)),
            b.and_(
                b.icmp_signed(">", chunks, ir.Constant(I64, 1)),
                b.icmp_signed("<", chunks, ir.Constant(I64, _WRITING)),
            ),
        )
        b.cbranch(wide, try_pool, alone)

        b.position_at_end(try_pool)
        taken = b.cmpxchg(
            self.busy, ir.Constant(I32, 0), ir.Constant(I32, 1), "acquire", "monotonic"
        )
        penalised = fn.append_basic_block("penalised")
        b.cbranch(b.extract_value(taken, 1), penalised, alone)

        b.position_at_end(penalised)
        penalty = b.load(self.penalty)
        serve = fn.append_basic_block("serve_penalty")
        b.cbranch(b.icmp_signed(">", penalty, ir.Constant(I64, 0)), serve, pooled)
        b.position_at_end(serve)
        b.store(b.sub(penalty, ir.Constant(I64, 1)), self.penalty)
        b.store_atomic(ir.Constant(I32, 0), self.busy, "release", 4)
        b.branch(alone)

        b.position_at_end(alone)
        self._run_all(b, fn, task, record, chunks)
        b.ret_void()

        b.position_at_end(pooled)
        self._after_fork(b, fn)
        started = self._start_workers(b, fn, worker, width)
        start = self.cycles(b)
        generation, asleep = self._publish(b, task, record, chunks, width)
        b.call(claim, [generation, ir.Constant(I64, 0)])
        own_done = self.cycles(b)
        self._wait_for(b, fn, chunks)
        waited = b.sub(self.cycles(b), own_done)
        self._judge(b, b.sub(own_done, start), waited, b.or_(started, asleep))
        b.store_atomic(ir.Constant(I32, 0), self.busy, "release", 4)
        b.ret_void()
        return fn

    def _judge(self, b: ir.IRBuilder, own: ir.Value, waited: ir.Value, excused: ir.Value) -> None:
        """After a job, penalise the pool if the caller waited for running chunks more than
        half as long as it worked itself, and more than LATE_CYCLES (a worker was
        descheduled, as when another process occupies its core): one strike more for each
        slow job, and from two strikes the next PENALTY_JOBS << (strikes - 2) jobs run on the
        caller alone; a job that was not slow takes one strike off, so a core that stays busy
        keeps the pool backed off. The first strike costs nothing: a worker late once among
        good jobs (an interrupt, the VM's host) says little, and 16 jobs alone for it cost an
        LSTM training step 1.3 ms of 36 at 2 threads. A job that started a worker or woke a
        sleeping one is excused: a new or woken thread is late for reasons that say nothing
        of the next jobs (it starts on a cold core and touches its workspace for the first
        time), and penalising it made the first 16 calls of every program, and the first
        after each pause between calls, run on one thread."""
        one = ir.Constant(I64, 1)
        late = b.and_(
            b.icmp_unsigned(">", b.mul(waited, ir.Constant(I64, 2)), own),
            b.icmp_unsigned(">", waited, ir.Constant(I64, LATE_CYCLES)),
        )
        slow = b.and_(late, b.not_(excused))
        before = b.load(self.strikes)
        more = b.select(
            b.icmp_unsigned("<", before, ir.Constant(I64, MAX_STRIKES)), b.add(before, one), before
        )
        fewer = b.select(
            b.icmp_unsigned(">", before, ir.Constant(I64, 0)), b.sub(before, one), before
        )
        strikes = b.select(slow, more, fewer)
        b.store(strikes, self.strikes)
        two = ir.Constant(I64, 2)
        jobs = b.shl(ir.Constant(I64, PENALTY_JOBS), b.sub(strikes, two))
        penalised = b.and_(slow, b.icmp_unsigned(">=", strikes, two))
        b.store(b.select(penalised, jobs, ir.Constant(I64, 0)), self.penalty)

    def _run_all(self, b: ir.IRBuilder, fn: ir.Function, task, record, chunks) -> None:
        """Run every chunk on the calling thread, as thread 0."""
        chunk, head, end = _counting_loop(
            b, fn, "alone", lambda chunk: b.icmp_signed("<", chunk, chunks)
        )
        b.call(task, [record, chunk, ir.Constant(I64, 0)])
        chunk.add_incoming(b.add(chunk, ir.Constant(I64, 1)), b.block)
        b.branch(head)
        b.position_at_end(end)

    def _after_fork(self, b: ir.IRBuilder, fn: ir.Function) -> None:
        """In a forked child (another process id) forget the parent's workers and reset the
        mutex and condition variable, which a parent's thread may have held."""
        getpid = self.declare("getpid", I32)
        memset = self.module.declare_intrinsic("llvm.memset", [I8_PTR, I64])
        pid = b.call(getpid, [])
        forked = fn.append_basic_block("forked")
        same = fn.append_basic_block("same_process")
        b.cbranch(b.icmp_signed("!=", pid, b.load(self.pid)), forked, same)
        b.position_at_end(forked)
        b.store(pid, self.pid)
        b.store(ir.Constant(I64, 0), self.workers)
        for variable in (self.mutex, self.cond):
            size = ir.Constant(I64, _SYNC_BYTES)
            b.call(
                memset,
                [self.sync(b, variable), ir.Constant(I8, 0), size, ir.Constant(ir.IntType(1), 0)],
            )
        b.branch(same)
        b.position_at_end(same)

    def _start_workers(
        self, b: ir.IRBuilder, fn: ir.Function, worker: ir.Function, width
    ) -> ir.Value:
        """Start workers 1 .. width-1 that do not exist yet (a failed start leaves fewer);
        return whether it started any."""
        create = self.declare("pthread_create", I32, I64.as_pointer(), I8_PTR, worker.type, I8_PTR)
        handle = b.alloca(I64)
        before = b.load(self.workers)
        head = fn.append_basic_block("start_worker")
        body = fn.append_basic_block("start_body")
        started = fn.append_basic_block("started")
        end = fn.append_basic_block("workers_ready")
        b.branch(head)
        b.position_at_end(head)
        count = b.load(self.workers)
        b.cbranch(b.icmp_signed("<", b.add(count, ir.Constant(I64, 1)), width), body, end)
        b.position_at_end(body)
        number = b.add(count, ir.Constant(I64, 1))
        status = b.call(
            create, [handle, ir.Constant(I8_PTR, None), worker, b.inttoptr(number, I8_PTR)]
        )
        b.cbranch(b.icmp_signed("==", status, ir.Constant(I32, 0)), started, end)
        b.position_at_end(started)
        b.store(number, self.workers)
        b.branch(head)
        b.position_at_end(end)
        return b.icmp_signed("!=", b.load(self.workers), before)

    def _publish(self, b: ir.IRBuilder, task, record, chunks, width) -> tuple[ir.Value, ir.Value]:
        """Write the job under a new generation and wake sleeping workers; return the
        generation and whether any worker was asleep."""
        old = b.load_atomic(self.state, "acquire", 8)
        generation = b.and_(
            b.add(b.lshr(old, ir.Constant(I64, 32)), ir.Constant(I64, 1)),
            ir.Constant(I64, 0xFFFFFFFF),
        )
        stamp = b.shl(generation, ir.Constant(I64, 32))
        b.store_atomic(b.or_(stamp, ir.Constant(I64, _WRITING)), self.state, "seq_cst", 8)
        b.store(task, self.task)
        b.store(record, self.record)
        b.store(chunks, self.chunks)
        if self.x86:
            b.store(self.read_mxcsr(b), self.mxcsr)
        b.store_atomic(ir.Constant(I64, 0), self.done, "monotonic", 8)
        first = b.or_(stamp, b.shl(width, ir.Constant(I64, 24)))
        b.store_atomic(first, self.state, "release", 8)
        lock = self.declare("pthread_mutex_lock", I32, I8_PTR)
        unlock = self.declare("pthread_mutex_unlock", I32, I8_PTR)
        broadcast = self.declare("pthread_cond_broadcast", I32, I8_PTR)
        b.call(lock, [self.sync(b, self.mutex)])
        asleep = b.icmp_signed(">", b.load(self.sleepers), ir.Constant(I64, 0))
        b.call(broadcast, [self.sync(b, self.cond)])
        b.call(unlock, [self.sync(b, self.mutex)])
        return generation, asleep

    def _wait_for(self, b: ir.IRBuilder, fn: ir.Function, chunks) -> None:
        """Spin until every chunk has finished, yielding the core now and then so that a
        worker sharing it can finish the chunk it runs."""
        sched_yield = self.declare("sched_yield", I32)
        spins, head, end = _counting_loop(
            b,
            fn,
            "wait",
            lambda _: b.icmp_signed("<", b.load_atomic(self.done, "acquire", 8), chunks),
        )
        self.pause(b)
        more = b.add(spins, ir.Constant(I64, 1))
        due = b.icmp_unsigned(
            "==", b.and_(more, ir.Constant(I64, SPINS_PER_YIELD - 1)), ir.Constant(I64, 0)
        )
        with b.if_then(due):
            b.call(sched_yield, [])
        spins.add_incoming(more, b.block)
        b.branch(head)
        b.position_at_end(end)


def _counting_loop(
    b: ir.IRBuilder, fn: ir.Function, name: str, keep_going: Callable[[ir.Value], ir.Value]
) -> tuple[ir.PhiInstr, ir.Block, ir.Block]:
    """Open a loop whose i64 counter starts at 0 and that runs while keep_going(counter):
    return the counter (the caller adds its next value from the block that loops back), the
    loop's head to branch back to, and the block after the loop; b is left in the body."""
    head = fn.append_basic_block(f"{name}_loop")
    body = fn.append_basic_block(f"{name}_body")
    end = fn.append_basic_block(f"{name}_end")
    before = b.block
    b.branch(head)
    b.position_at_end(head)
    counter = b.phi(I64)
    counter.add_incoming(ir.Constant(I64, 0), before)
    b.cbranch(keep_going(counter), body, end)
    b.position_at_end(body)
    return counter, head, end
