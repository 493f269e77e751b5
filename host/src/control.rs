//! The control runtime: everything that is not request serving — health
//! checks, DNS re-resolution, the admin listener, the store's sweeps, the
//! configure hooks of plugins whose calls wait on I/O.
//!
//! With more than one worker it is a small runtime on threads of its own
//! ([`Control`]), so none of it competes with the workers' event loops.
//! With one worker, `wasmgate run` runs it on the worker's own runtime, on
//! the process's one thread ([`crate::gateway::run`]): the control work
//! there is a few timers, and a process of one thread is cheaper to serve
//! from (the kernel skips the file table's reference counts on each
//! socket call, and libc's system call wrappers their cancellation
//! bookkeeping).
//!
//! Loading a config waits for some control work (a discovery name
//! resolved, an async plugin configured): [`wait`] runs it there and waits
//! for it, or, while the one-thread runtime is not driven yet (the config
//! first loaded on that thread), drives it to run it.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// A control runtime on threads of its own; dropping it stops them.
pub(crate) struct Control {
    pub handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    pub fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasmgate-control")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("wasmgate-control-main".into()).spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(Self { handle, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

thread_local! {
    /// The runtime this thread is about to drive, while it is not driving
    /// it yet: control work waited for on this thread runs on it, here.
    static NOT_YET_DRIVEN: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread with `rt` — the control runtime this thread
/// drives once `f` returns — known to [`wait`].
pub(crate) fn before_driving<R>(rt: &Rc<Runtime>, f: impl FnOnce() -> R) -> R {
    NOT_YET_DRIVEN.set(Some(rt.clone()));
    let out = f();
    NOT_YET_DRIVEN.set(None);
    out
}

/// Runs `work` on the control runtime `control` and waits for its output,
/// for at most `limit`; `None` when it took longer or the runtime stopped.
/// Called outside the runtime (a config being loaded).
pub(crate) fn wait<T: Send + 'static>(
    control: &Handle,
    limit: Option<Duration>,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let bounded = async move {
        match limit {
            Some(limit) => tokio::time::timeout(limit, work).await.ok(),
            None => Some(work.await),
        }
    };
    if let Some(rt) = NOT_YET_DRIVEN.with_borrow(Clone::clone) {
        return rt.block_on(bounded);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    control.spawn(async move {
        let _ = tx.send(bounded.await);
    });
    rx.recv().ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that needs the runtime's I/O and timer drivers: a loopback
    /// connection made and accepted, after a sleep.
    async fn loopback() -> bool {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else { return false };
        let Ok(addr) = listener.local_addr() else { return false };
        let (connected, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        connected.is_ok() && accepted.is_ok()
    }

    #[test]
    fn work_waited_for_runs_on_a_control_thread() {
        let control = Control::start().unwrap();
        assert_eq!(wait(&control.handle, Some(Duration::from_secs(10)), loopback()), Some(true));
        assert_eq!(wait(&control.handle, Some(Duration::from_millis(20)), std::future::pending::<()>()), None);
    }

    #[test]
    fn work_waited_for_before_the_one_thread_runtime_is_driven_is_driven_here() {
        let rt = Rc::new(tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap());
        let handle = rt.handle().clone();
        // Spawned before: runs once the runtime is driven, here too.
        let spawned = handle.spawn(loopback());
        let (done, late) = before_driving(&rt, || {
            let done = wait(&handle, Some(Duration::from_secs(10)), loopback());
            (done, wait(&handle, Some(Duration::from_millis(20)), std::future::pending::<()>()))
        });
        assert_eq!((done, late), (Some(true), None));
        assert!(rt.block_on(spawned).unwrap());
    }
}
