//! Fragmented MP4 (ISO/IEC 14496-12, CMAF-style): the init segment (`ftyp` + `moov` with one
//! `trak` per track and `mvex`) and media fragments (`moof` + `mdat`). The boxes are
//! `mp4-atom`'s; only `mdat`'s 8-byte header is written here, so sample data is copied once,
//! straight into the fragment.

use finch_proto::codec::sps::{H264Sps, H265Sps};
use finch_proto::depack::AacConfig;
use mp4_atom::{self as m, Encode, FourCC};

/// Why a box could not be written.
#[derive(Debug, thiserror::Error)]
#[error("mp4: {0}")]
pub struct Mp4Error(#[from] mp4_atom::Error);

/// A track's codec and what its sample entry needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Codec {
    /// H.264 with its parameter sets.
    H264 {
        /// The SPS NAL unit.
        sps: Vec<u8>,
        /// The PPS NAL unit.
        pps: Vec<u8>,
        /// What the SPS says.
        info: H264Sps,
    },
    /// H.265 with its parameter sets.
    H265 {
        /// The VPS NAL unit.
        vps: Vec<u8>,
        /// The SPS NAL unit.
        sps: Vec<u8>,
        /// The PPS NAL unit.
        pps: Vec<u8>,
        /// What the SPS says.
        info: H265Sps,
    },
    /// AAC.
    Aac(AacConfig),
    /// Opus (48 kHz).
    Opus {
        /// Its channels (1 or 2).
        channels: u8,
    },
}

impl Codec {
    /// Whether it is a video codec.
    pub fn is_video(&self) -> bool {
        matches!(self, Codec::H264 { .. } | Codec::H265 { .. })
    }

    /// The RFC 6381 `CODECS` name (`avc1.42c00d`, `hvc1.1.6.L93.90`, `mp4a.40.2`).
    pub fn rfc6381(&self) -> String {
        match self {
            Codec::H264 { info, .. } => format!(
                "avc1.{:02x}{:02x}{:02x}",
                info.profile[0], info.profile[1], info.profile[2]
            ),
            Codec::H265 { info, .. } => {
                let space = ["", "A", "B", "C"][usize::from(info.profile_space & 3)];
                let compat = u32::from_be_bytes(info.compatibility).reverse_bits();
                let tier = if info.tier { 'H' } else { 'L' };
                let mut s = format!(
                    "hvc1.{space}{}.{compat:x}.{tier}{}",
                    info.profile_idc, info.level_idc
                );
                let last = info.constraints.iter().rposition(|b| *b != 0);
                if let Some(last) = last {
                    for b in &info.constraints[..=last] {
                        s.push_str(&format!(".{b:x}"));
                    }
                }
                s
            }
            Codec::Aac(c) => format!("mp4a.40.{}", c.object_type()),
            Codec::Opus { .. } => "opus".to_owned(),
        }
    }
}

/// One track of the presentation.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    /// Its id (1, 2 …).
    pub id: u32,
    /// Its timescale: the RTP clock rate.
    pub timescale: u32,
    /// Its codec.
    pub codec: Codec,
}

/// One sample of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Until the next sample, in the track's timescale.
    pub duration: u32,
    /// A sync sample (decoding may start here).
    pub key: bool,
    /// Presentation time minus decode time (B-frames), in the track's timescale.
    pub cts: i32,
    /// The sample's bytes (MP4 form: length-prefixed NAL units, or a raw audio frame).
    pub data: bytes::Bytes,
}

/// The samples of one track in one fragment.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The track's id.
    pub track: u32,
    /// The first sample's decode time, in the track's timescale.
    pub base_dts: u64,
    /// Its samples, in decode order.
    pub samples: &'a [Sample],
}

const SYNC: u32 = 0x0200_0000;
/// `sample_depends_on = 1` and `sample_is_non_sync_sample`.
const NON_SYNC: u32 = 0x0101_0000;

/// The init segment for `tracks`.
pub fn init_segment(tracks: &[TrackSpec]) -> Result<Vec<u8>, Mp4Error> {
    use m::{Ftyp, Moov, Mvex, Mvhd, Trex};
    let ftyp = Ftyp {
        major_brand: b"iso5".into(),
        minor_version: 512,
        compatible_brands: vec![
            b"iso5".into(),
            b"iso6".into(),
            b"mp41".into(),
            b"cmfc".into(),
        ],
    };
    let trak = tracks.iter().map(trak).collect();
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: tracks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex {
                    track_id: t.id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

fn trak(t: &TrackSpec) -> m::Trak {
    use m::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};
    use m::{
        Audio, Avc1, Avcc, Dinf, Dops, Dref, Esds, Hdlr, Hvc1, HvcCArray, Hvcc, Mdhd, Mdia, Minf,
        Mp4a, Opus, Smhd, Stbl, Stco, Stsd, Tkhd, Trak, Url, Visual, Vmhd,
    };
    let (width, height) = match &t.codec {
        Codec::H264 { info, .. } => (info.width, info.height),
        Codec::H265 { info, .. } => (info.width, info.height),
        Codec::Aac(_) | Codec::Opus { .. } => (0, 0),
    };
    let visual = Visual {
        width: width as u16,
        height: height as u16,
        ..Default::default()
    };
    let codec: m::Codec = match &t.codec {
        Codec::H264 { sps, pps, info } => Avc1 {
            visual,
            avcc: Avcc {
                configuration_version: 1,
                avc_profile_indication: info.profile[0],
                profile_compatibility: info.profile[1],
                avc_level_indication: info.profile[2],
                length_size: 4,
                sequence_parameter_sets: vec![sps.clone()],
                picture_parameter_sets: vec![pps.clone()],
                ext: None,
            },
            btrt: None,
            colr: None,
            pasp: None,
            taic: None,
            fiel: None,
            spatial: Default::default(),
        }
        .into(),
        Codec::H265 {
            vps,
            sps,
            pps,
            info,
        } => {
            let array = |nal_unit_type: u8, nal: &Vec<u8>| HvcCArray {
                completeness: true,
                nal_unit_type,
                nalus: vec![nal.clone()],
            };
            Hvc1 {
                visual,
                hvcc: Hvcc {
                    configuration_version: 1,
                    general_profile_space: info.profile_space,
                    general_tier_flag: info.tier,
                    general_profile_idc: info.profile_idc,
                    general_profile_compatibility_flags: info.compatibility,
                    general_constraint_indicator_flags: info.constraints,
                    general_level_idc: info.level_idc,
                    min_spatial_segmentation_idc: 0,
                    parallelism_type: 0,
                    chroma_format_idc: info.chroma_format_idc,
                    bit_depth_luma_minus8: info.bit_depth_luma_minus8,
                    bit_depth_chroma_minus8: info.bit_depth_chroma_minus8,
                    avg_frame_rate: 0,
                    constant_frame_rate: 0,
                    num_temporal_layers: info.temporal_layers,
                    temporal_id_nested: info.temporal_id_nested,
                    length_size_minus_one: 3,
                    arrays: vec![array(32, vps), array(33, sps), array(34, pps)],
                },
                lhvc: None,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                ccst: None,
                spatial: None,
            }
            .into()
        }
        Codec::Aac(c) => Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: u16::from(c.channels().max(1)),
                sample_size: 16,
                sample_rate: (t.timescale.min(65535) as u16).into(),
            },
            esds: Esds {
                es_desc: EsDescriptor {
                    es_id: t.id as u16,
                    dec_config: DecoderConfig {
                        object_type_indication: 0x40,
                        stream_type: 0x05,
                        up_stream: 0,
                        buffer_size_db: Default::default(),
                        max_bitrate: 0,
                        avg_bitrate: 0,
                        dec_specific: Some(DecoderSpecific {
                            profile: c.object_type(),
                            freq_index: ((c.asc[0] & 0x07) << 1) | (c.asc[1] >> 7),
                            chan_conf: c.channels(),
                            raw: c.asc.clone(),
                        }),
                    },
                    ..Default::default()
                },
            },
            btrt: None,
            taic: None,
        }
        .into(),
        Codec::Opus { channels } => Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: u16::from(*channels),
                sample_size: 16,
                sample_rate: 48000u16.into(),
            },
            dops: Dops {
                output_channel_count: *channels,
                // RTP does not carry the encoder's pre-skip (RFC 7587 §4.2).
                pre_skip: 0,
                input_sample_rate: 48000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
    };
    let video = t.codec.is_video();
    Trak {
        tkhd: Tkhd {
            track_id: t.id,
            enabled: true,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: (width as u16).into(),
            height: (height as u16).into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: t.timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(if video { b"vide" } else { b"soun" }),
                name: if video {
                    "VideoHandler"
                } else {
                    "SoundHandler"
                }
                .into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// One fragment: `moof` (sequence number `sequence`) and `mdat` with every run's samples.
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Result<Vec<u8>, Mp4Error> {
    use m::{Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry};
    let moof = |offsets: &[i32]| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: runs
            .iter()
            .zip(offsets)
            .map(|(r, &offset)| Traf {
                tfhd: Tfhd {
                    track_id: r.track,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: r.base_dts,
                }),
                trun: vec![Trun {
                    data_offset: Some(offset),
                    samples: r
                        .samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.data.len() as u32),
                            flags: Some(if s.key { SYNC } else { NON_SYNC }),
                            // Every entry of a run has the field, or none.
                            cts: r
                                .samples
                                .iter()
                                .any(|s| s.cts != 0)
                                .then_some(i64::from(s.cts)),
                        })
                        .collect::<Vec<_>>()
                        .into(),
                }],
                ..Default::default()
            })
            .collect(),
    };
    // The data offsets depend on the moof's size, which does not depend on their values.
    let mut sized = Vec::new();
    moof(&vec![0; runs.len()]).encode(&mut sized)?;
    let data_len: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut offsets = Vec::with_capacity(runs.len());
    let mut at = sized.len() + 8;
    for r in runs {
        offsets.push(at as i32);
        at += r.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mut out = Vec::with_capacity(sized.len() + 8 + data_len);
    moof(&offsets).encode(&mut out)?;
    out.extend_from_slice(&((8 + data_len) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        out.extend_from_slice(&s.data);
    }
    Ok(out)
}
