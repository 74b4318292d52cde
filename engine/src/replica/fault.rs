//! Test-only fault injection. Every durable side effect of a chain change
//! (metadata replace, file create, link, rename, data copy, deletion of
//! unreferenced files) passes a crash point; tests arm a countdown so that
//! the Nth point fails, which stops the operation there like a crash
//! would, then reopen the directory. Also lets tests pretend the
//! filesystem refuses O_DIRECT or does not report holes. Thread-local,
//! so parallel tests are independent. In normal builds every check is a
//! constant no-op.

pub(super) use imp::*;

#[cfg(not(test))]
mod imp {
    use std::io;

    #[inline(always)]
    pub(in crate::replica) fn crash_point() -> io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(in crate::replica) fn refuse_direct() -> bool {
        false
    }

    #[inline(always)]
    pub(in crate::replica) fn hide_holes() -> bool {
        false
    }
}

#[cfg(test)]
mod imp {
    use std::cell::Cell;
    use std::io;

    thread_local! {
        static COUNTDOWN: Cell<Option<u32>> = const { Cell::new(None) };
        static REFUSE_DIRECT: Cell<bool> = const { Cell::new(false) };
        static HIDE_HOLES: Cell<bool> = const { Cell::new(false) };
    }

    /// A crash point: fails once the armed countdown reaches zero.
    pub(in crate::replica) fn crash_point() -> io::Result<()> {
        COUNTDOWN.with(|c| match c.get() {
            Some(0) => Err(io::Error::other("injected crash")),
            Some(n) => {
                c.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        })
    }

    /// Makes the `n`th crash point from now fail (and every one after it).
    pub(in crate::replica) fn arm(n: u32) {
        COUNTDOWN.with(|c| c.set(Some(n)));
    }

    /// Whether an armed crash point has fired.
    pub(in crate::replica) fn fired() -> bool {
        COUNTDOWN.with(|c| c.get() == Some(0))
    }

    /// Disarms crash points.
    pub(in crate::replica) fn disarm() {
        COUNTDOWN.with(|c| c.set(None));
    }

    /// Whether tests asked to pretend O_DIRECT is refused (EINVAL).
    pub(in crate::replica) fn refuse_direct() -> bool {
        REFUSE_DIRECT.with(Cell::get)
    }

    /// Pretend (or stop pretending) that O_DIRECT is refused.
    pub(in crate::replica) fn set_refuse_direct(on: bool) {
        REFUSE_DIRECT.with(|c| c.set(on));
    }

    /// Whether tests asked to pretend the filesystem does not report holes
    /// (`SEEK_DATA` answers "data" everywhere, as FUSE without an lseek
    /// handler and NFSv3 do).
    pub(in crate::replica) fn hide_holes() -> bool {
        HIDE_HOLES.with(Cell::get)
    }

    /// Pretend (or stop pretending) that the filesystem hides holes.
    pub(in crate::replica) fn set_hide_holes(on: bool) {
        HIDE_HOLES.with(|c| c.set(on));
    }
}
