//! The hand-off between a download (async, on the runtime) and its extractor (a thread): a
//! bounded channel of chunks, so a slow extractor slows the download instead of buffering it.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunks in flight between a download and its extractor thread (each ≤ a few hundred KiB).
const CHANNEL_DEPTH: usize = 32;

/// A connected writer (download side) and reader (extractor side).
pub(super) fn channel() -> (ChannelWriter, ChannelReader) {
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    (ChannelWriter { tx: Some(tx), stopped: false }, ChannelReader { rx, chunk: Vec::new(), pos: 0 })
}

/// A `Write` that hands chunks to an extractor thread. When the extractor has stopped (it
/// refused the layer), writing fails and [`ChannelWriter::extractor_stopped`] says so, so that
/// the caller reports the extractor's reason rather than this broken pipe.
pub(super) struct ChannelWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    stopped: bool,
}

impl ChannelWriter {
    /// Whether a write failed because the extractor had stopped reading.
    pub(super) fn extractor_stopped(&self) -> bool {
        self.stopped
    }

    /// Ends the stream: the extractor reads end of file.
    pub(super) fn close(&mut self) {
        self.tx = None;
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.tx.as_ref().ok_or_else(|| io::Error::other("the stream to the extractor is closed"))?;
        if tx.send(buf.to_vec()).is_err() {
            self.stopped = true;
            return Err(io::Error::other("the extractor stopped reading"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The extractor side: a `Read` over the chunks; end of file once the writer is closed.
pub(super) struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
