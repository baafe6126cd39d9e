//! Where a blob's bytes go as they arrive: hashed with SHA-256 and written to the caller's sink,
//! in order, exactly once.
//!
//! Two ways, one contract ([`Verifier`]):
//! - **inline**: hash and write on the task that receives (for small blobs and borrowed sinks);
//! - **threaded**: each received chunk (a reference-counted `Bytes`, not a copy) goes through a
//!   bounded channel to one thread that hashes and writes it, so the receiving task reads the
//!   next chunk from the socket while the previous one is hashed and copied into the sink. On a
//!   link about as fast as one core hashes (SHA-256 with SHA-NI: `openssl speed -evp sha256`
//!   gives about 1.5 GB/s on a 2-core x86-64 machine; 10 Gbit/s is 1.25 GB/s) receiving and
//!   verifying then overlap on two cores instead of adding up on one.

use std::io::{self, Write};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Batches in flight between the receiving task and the hashing thread: bounds the memory held
/// (at most `IN_FLIGHT` × ([`BATCH`] + one chunk of hyper's, whose read buffer is about 400 KiB))
/// and applies backpressure to the socket when hashing is the slower side.
const IN_FLIGHT: usize = 8;

/// Bytes gathered from received chunks before they go to the thread together, written with one
/// `writev(2)`: one wake-up and one system call per batch instead of per chunk (chunks are as
/// small as what one socket read returned).
const BATCH: usize = 512 << 10;

/// Hashes and writes a blob's chunks; see the module documentation.
pub(crate) enum Verifier<'a> {
    /// On the calling task.
    Inline { hasher: Sha256, sink: &'a mut (dyn Write + Send) },
    /// On a thread of its own; `done` carries its result (the hash, or the sink's error).
    Threaded {
        batches: mpsc::Sender<Vec<Bytes>>,
        batch: Vec<Bytes>,
        batched: usize,
        done: oneshot::Receiver<io::Result<[u8; 32]>>,
    },
}

impl<'a> Verifier<'a> {
    /// Hashes and writes on the calling task.
    pub(crate) fn inline(sink: &'a mut (dyn Write + Send)) -> Self {
        Verifier::Inline { hasher: Sha256::new(), sink }
    }

    /// Starts the thread that hashes and writes into `sink`, which it flushes and drops at the
    /// end.
    ///
    /// # Errors
    /// The operating system's, when no thread can be started.
    pub(crate) fn threaded(mut sink: Box<dyn Write + Send>) -> io::Result<Verifier<'static>> {
        let (batches, mut rx) = mpsc::channel::<Vec<Bytes>>(IN_FLIGHT);
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new().name("blob-verify".into()).spawn(move || {
            let mut hasher = Sha256::new();
            let result = (|| {
                while let Some(batch) = rx.blocking_recv() {
                    for chunk in &batch {
                        hasher.update(chunk);
                    }
                    write_all_vectored(&mut sink, &batch)?;
                }
                sink.flush()?;
                Ok(hasher.finalize().into())
            })();
            let _ = tx.send(result);
        })?;
        Ok(Verifier::Threaded { batches, batch: Vec::new(), batched: 0, done })
    }

    /// Hashes and writes `chunk`, the blob's next bytes.
    ///
    /// # Errors
    /// The sink's write error (for the threaded way, as soon as the thread has stopped on it).
    pub(crate) async fn take(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            Verifier::Inline { hasher, sink } => {
                hasher.update(&chunk);
                sink.write_all(&chunk)
            }
            Verifier::Threaded { batches, batch, batched, done } => {
                *batched += chunk.len();
                batch.push(chunk);
                if *batched < BATCH {
                    return Ok(());
                }
                *batched = 0;
                match batches.send(std::mem::take(batch)).await {
                    Ok(()) => Ok(()),
                    // The thread stopped: only a sink error does that.
                    Err(_) => Err(match done.await {
                        Ok(Err(e)) => e,
                        _ => io::Error::other("the blob's hashing thread stopped"),
                    }),
                }
            }
        }
    }

    /// The SHA-256 of every byte taken, once they are all written (and, for the threaded way,
    /// flushed).
    ///
    /// # Errors
    /// The sink's write or flush error.
    pub(crate) async fn finish(self) -> io::Result<[u8; 32]> {
        match self {
            Verifier::Inline { hasher, sink } => {
                sink.flush()?;
                Ok(hasher.finalize().into())
            }
            Verifier::Threaded { batches, batch, done, .. } => {
                // A failed send means the thread stopped on an error, which `done` carries.
                if !batch.is_empty() {
                    let _ = batches.send(batch).await;
                }
                drop(batches);
                done.await.map_err(|_| io::Error::other("the blob's hashing thread stopped"))?
            }
        }
    }
}

/// Writes every byte of `chunks`, in order, with as few `writev(2)` calls as the sink allows.
fn write_all_vectored(sink: &mut dyn Write, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match sink.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that fails after `room` bytes.
    struct Small {
        room: usize,
        got: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Small {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no room"));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.lock().unwrap().extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn chunks() -> Vec<Bytes> {
        (0..100u32).map(|i| Bytes::from(vec![i as u8; 1000 + i as usize * 37])).collect()
    }

    #[tokio::test]
    async fn both_ways_write_every_byte_in_order_and_hash_it() {
        let all: Vec<u8> = chunks().iter().flat_map(|c| c.to_vec()).collect();
        let expected: [u8; 32] = Sha256::digest(&all).into();

        let mut inline_sink = Vec::new();
        let mut v = Verifier::inline(&mut inline_sink);
        for c in chunks() {
            v.take(c).await.unwrap();
        }
        assert_eq!(v.finish().await.unwrap(), expected);
        assert_eq!(inline_sink, all);

        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Small { room: usize::MAX, got: got.clone() };
        let mut v = Verifier::threaded(Box::new(sink)).unwrap();
        for c in chunks() {
            v.take(c).await.unwrap();
        }
        assert_eq!(v.finish().await.unwrap(), expected);
        assert_eq!(*got.lock().unwrap(), all);
    }

    #[tokio::test]
    async fn a_sink_error_reaches_the_receiving_task() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut v = Verifier::threaded(Box::new(Small { room: 5000, got })).unwrap();
        let mut error = None;
        for c in chunks() {
            if let Err(e) = v.take(c).await {
                error = Some(e);
                break;
            }
        }
        let e = match error {
            Some(e) => e,
            None => v.finish().await.unwrap_err(),
        };
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
    }
}
