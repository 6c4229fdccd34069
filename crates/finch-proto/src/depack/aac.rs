//! AAC in RTP (RFC 3640, `mpeg4-generic`, the AAC-hbr and AAC-lbr modes): AU headers give each
//! frame's size, frames follow back to back; a frame too big for one packet is fragmented over
//! several, the last with the marker bit.

use super::{Frame, MAX_FRAME_BYTES};

/// What the SDP's `a=fmtp` says about the AU headers and the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig (`config=`, hex in the SDP).
    pub asc: Vec<u8>,
    /// Bits of an AU header's size field (`sizelength`, 13 in AAC-hbr).
    pub size_length: u32,
    /// Bits of the first AU header's index (`indexlength`, 3).
    pub index_length: u32,
    /// Bits of later headers' index delta (`indexdeltalength`, 3).
    pub index_delta_length: u32,
    /// Samples per frame (1024; 960 for the rare 960-sample AAC).
    pub frame_samples: u32,
}

impl AacConfig {
    /// Reads an `a=fmtp` value (`streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1210;
    /// SizeLength=13; IndexLength=3; IndexDeltaLength=3`); `None` without a usable `config`.
    pub fn from_fmtp(fmtp: &str) -> Option<AacConfig> {
        let mut c = AacConfig {
            asc: Vec::new(),
            size_length: 13,
            index_length: 3,
            index_delta_length: 3,
            frame_samples: 1024,
        };
        // With or without the payload type in front (`96 streamtype=5; …`).
        let params = match fmtp.split_once(' ') {
            Some((pt, rest)) if pt.bytes().all(|b| b.is_ascii_digit()) => rest,
            _ => fmtp,
        };
        for kv in params.split(';') {
            let Some((k, v)) = kv.trim().split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "config" => c.asc = hex(v)?,
                "sizelength" => c.size_length = v.parse().ok()?,
                "indexlength" => c.index_length = v.parse().ok()?,
                "indexdeltalength" => c.index_delta_length = v.parse().ok()?,
                _ => {}
            }
        }
        if c.asc.len() < 2 || c.size_length == 0 || c.size_length > 16 || c.index_length > 8 {
            return None;
        }
        // frameLengthFlag (bit 5 of the second byte in the common 2-byte form): 960 samples.
        if c.asc[1] & 0x04 != 0 {
            c.frame_samples = 960;
        }
        Some(c)
    }

    /// The sampling rate the AudioSpecificConfig names.
    pub fn sample_rate(&self) -> Option<u32> {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        let index = ((self.asc[0] & 0x07) << 1) | (self.asc[1] >> 7);
        RATES.get(usize::from(index)).copied()
    }

    /// The channel count the AudioSpecificConfig names.
    pub fn channels(&self) -> u8 {
        (self.asc[1] >> 3) & 0x0f
    }

    /// The object type (2: AAC-LC).
    pub fn object_type(&self) -> u8 {
        self.asc[0] >> 3
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Builds AAC frames from one audio track's packets.
#[derive(Debug)]
pub struct Aac {
    config: AacConfig,
    /// A fragmented frame: its timestamp, expected size and bytes so far.
    fragment: Option<(u32, usize, Vec<u8>)>,
    last_seq: Option<u16>,
}

impl Aac {
    /// A depacketizer for a stream described by `config`.
    pub fn new(config: AacConfig) -> Aac {
        Aac {
            config,
            fragment: None,
            last_seq: None,
        }
    }

    /// The configuration it reads the stream with.
    pub fn config(&self) -> &AacConfig {
        &self.config
    }

    /// Takes one RTP packet; finished frames go to `out`.
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        if self.last_seq.is_some_and(|l| seq != l.wrapping_add(1)) {
            self.fragment = None;
        }
        self.last_seq = Some(seq);
        let Some(sizes) = self.headers(payload) else {
            self.fragment = None;
            return;
        };
        let header_bytes = 2 + (headers_bits(payload) as usize).div_ceil(8);
        let mut data = payload.get(header_bytes..).unwrap_or_default();
        if let Some((fts, size, mut buf)) = self.fragment.take() {
            // A continuation: one header naming the whole frame's size (RFC 3640 §3.2.3.1).
            if fts == ts && sizes.len() == 1 && sizes[0] == size {
                buf.extend_from_slice(data);
                if buf.len() == size {
                    out.push(Frame {
                        rtp_ts: ts,
                        key: true,
                        data: buf,
                    });
                } else if buf.len() < size && !marker {
                    self.fragment = Some((fts, size, buf));
                }
                return;
            }
        }
        let step = self.config.frame_samples;
        for (i, &size) in sizes.iter().enumerate() {
            let frame_ts = ts.wrapping_add(step.wrapping_mul(i as u32));
            if size <= data.len() {
                out.push(Frame {
                    rtp_ts: frame_ts,
                    key: true,
                    data: data[..size].to_vec(),
                });
                data = &data[size..];
            } else {
                if sizes.len() == 1 && !marker && size <= MAX_FRAME_BYTES {
                    self.fragment = Some((ts, size, data.to_vec()));
                }
                return;
            }
        }
    }

    /// The sizes in the AU header section.
    fn headers(&self, payload: &[u8]) -> Option<Vec<usize>> {
        let bits = headers_bits(payload);
        let body = payload.get(2..2 + (bits as usize).div_ceil(8))?;
        let mut r = BitReader { data: body, pos: 0 };
        let mut sizes = Vec::new();
        let mut first = true;
        while r.pos < bits as usize {
            let size = r.read(self.config.size_length)?;
            let index_bits = if first {
                self.config.index_length
            } else {
                self.config.index_delta_length
            };
            r.read(index_bits)?;
            first = false;
            sizes.push(size as usize);
            if sizes.len() > 64 {
                return None;
            }
        }
        Some(sizes)
    }
}

fn headers_bits(payload: &[u8]) -> u32 {
    match payload {
        [hi, lo, ..] => u32::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AacConfig {
        AacConfig::from_fmtp(
            "96 streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1210; SizeLength=13; IndexLength=3; IndexDeltaLength=3",
        )
        .unwrap()
    }

    /// An AU header section for frames of these sizes (13-bit size, 3-bit index 0).
    fn packet(sizes: &[usize], fill: u8) -> Vec<u8> {
        let mut p = ((sizes.len() * 16) as u16).to_be_bytes().to_vec();
        for &s in sizes {
            p.extend_from_slice(&((s as u16) << 3).to_be_bytes());
        }
        for &s in sizes {
            p.extend(std::iter::repeat_n(fill, s));
        }
        p
    }

    #[test]
    fn the_config_names_rate_channels_and_object_type() {
        let c = config();
        assert_eq!(c.asc, vec![0x12, 0x10]);
        assert_eq!(c.sample_rate(), Some(44100));
        assert_eq!(c.channels(), 2);
        assert_eq!(c.object_type(), 2);
        assert!(AacConfig::from_fmtp("96 mode=AAC-hbr").is_none());
        let bare = AacConfig::from_fmtp("streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1190; sizelength=13; indexlength=3; indexdeltalength=3").unwrap();
        assert_eq!(bare.sample_rate(), Some(48000));
        assert_eq!(bare.channels(), 2);
    }

    #[test]
    fn several_frames_per_packet_get_their_own_timestamps() {
        let mut d = Aac::new(config());
        let mut out = Vec::new();
        d.push(1, 1000, true, &packet(&[10, 20, 5], 7), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(|f| f.rtp_ts).collect::<Vec<_>>(),
            [1000, 2024, 3048]
        );
        assert_eq!(out[1].data.len(), 20);
    }

    #[test]
    fn a_fragmented_frame_is_put_back_together_and_a_loss_drops_it() {
        let mut d = Aac::new(config());
        let mut out = Vec::new();
        let mut first = packet(&[30], 1);
        first.truncate(4 + 12);
        d.push(1, 5, false, &first, &mut out);
        let mut second = packet(&[30], 2);
        second.truncate(4 + 18);
        d.push(2, 5, true, &second, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 30);
        // The same with the second part lost.
        d.push(3, 6, false, &first, &mut out);
        d.push(5, 6, true, &second, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = Aac::new(config());
        let mut out = Vec::new();
        for i in 0..500u16 {
            let junk: Vec<u8> = (0..(i % 97)).map(|b| (b as u8).wrapping_mul(73)).collect();
            d.push(i, u32::from(i), i % 2 == 0, &junk, &mut out);
        }
    }
}
