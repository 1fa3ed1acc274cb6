//! Where the frames of the app's side of a WebSocket end (RFC 6455, 5.2), so that the
//! tunnel of an app that stops can close the client's side between two frames, with
//! close code 1001 ("going away"), instead of cutting a frame in half.

/// The close frame a server sends for 1001: FIN + close, 2 bytes of payload, unmasked.
pub const GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// Follows the frames of one direction of a WebSocket.
#[derive(Debug, Default)]
pub struct Frames {
    /// Payload bytes left in the current frame.
    payload: u64,
    /// The start of a frame header read so far.
    head: [u8; 14],
    have: usize,
}

impl Frames {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload > 0 {
                let n = (data.len() as u64).min(self.payload);
                self.payload -= n;
                data = &data[n as usize..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if let Some(payload) = self.header_done() {
                self.payload = payload;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header read so far is complete: 2 bytes, then 2 or 8
    /// of extended length (for 126 and 127), then 4 of mask if the mask bit is set.
    fn header_done(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let short = self.head[1] & 0x7F;
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        if self.have < 2 + extended + masked {
            return None;
        }
        let length = match extended {
            0 => u64::from(short),
            _ => self.head[2..2 + extended]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b)),
        };
        Some(length)
    }

    /// Between two frames.
    pub fn at_boundary(&self) -> bool {
        self.payload == 0 && self.have == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_frames_split_anywhere() {
        let mut stream = vec![0x81, 0x03, b'a', b'b', b'c'];
        stream.extend([0x82, 126, 0x01, 0x00]);
        stream.extend(vec![7u8; 256]);
        stream.extend([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        stream.extend(vec![9u8; 65536]);
        stream.extend([0x89, 0x80, 1, 2, 3, 4]);
        let ends = [5, 5 + 4 + 256, 5 + 4 + 256 + 10 + 65536, stream.len()];
        for split in [1, 2, 3, 7, 100, 70000] {
            let mut frames = Frames::default();
            let mut at = 0;
            for chunk in stream.chunks(split) {
                frames.feed(chunk);
                at += chunk.len();
                assert_eq!(
                    frames.at_boundary(),
                    ends.contains(&at),
                    "split {split} at {at}"
                );
            }
        }
    }
}
