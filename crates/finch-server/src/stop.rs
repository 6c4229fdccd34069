//! Waiting for a [`CancellationToken`] in a task that wakes thousands of times a second.
//!
//! A reader's connection task wakes once per frame and polls every branch of its `select!`,
//! cancellation included. Polling tokio-util's `WaitForCancellationFuture` locks the token's
//! mutex each time (`is_cancelled`), which the profile of 1000 readers showed at ~4 % of the
//! worker's CPU. [`Stopped`] polls it only after it has woken the task: the token's notification
//! goes through a waker of ours that sets a flag, and until the flag is set a poll is one atomic
//! load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The waker handed to the token: notes that it fired, then wakes the task.
struct Flag {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(w) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Resolves once `token` is cancelled; cheap to poll while it is not.
pub struct Stopped {
    inner: Pin<Box<WaitForCancellationFutureOwned>>,
    flag: Arc<Flag>,
    waker: Waker,
    /// The task waker last given to `flag`, to notice when it changes.
    task: Option<Waker>,
}

impl Stopped {
    pub fn new(token: CancellationToken) -> Stopped {
        let flag = Arc::new(Flag {
            // Set: the first poll registers with the token.
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Stopped {
            inner: Box::pin(token.cancelled_owned()),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            this.task = Some(w);
        }
        if !this.flag.fired.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut own = Context::from_waker(&this.waker);
        this.inner.as_mut().poll(&mut own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn it_resolves_on_cancellation_and_not_before() {
        let token = CancellationToken::new();
        let mut s = Stopped::new(token.child_token());
        // Many wakes for other reasons: still pending.
        for _ in 0..1000 {
            tokio::select! {
                biased;
                _ = &mut s => panic!("resolved before the cancellation"),
                _ = tokio::task::yield_now() => {}
            }
        }
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t2.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), &mut s)
            .await
            .expect("a cancellation wakes the waiting task");
        // Already cancelled when created: resolves on the first poll.
        tokio::time::timeout(Duration::from_secs(1), Stopped::new(token))
            .await
            .unwrap();
    }
}
