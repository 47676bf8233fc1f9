//! DICOM for Huizhen (STANDARDS §3): the `dicom` source, an SCP for C-ECHO, C-STORE and C-FIND
//! on the engine's shared listener plumbing, the filesystem object store, the study index (in
//! the core's store) and the study-complete event; the SCU side of the CLI tools.
//!
//! dicom-ul gives PDUs but no DIMSE layer and dicom-object gives data sets; what is written here:
//! [`assoc`] (associations over any byte stream: PDU framing with the listener's deadlines,
//! negotiation, both roles), [`dimse`] (command sets), [`dataset`] (a streaming reader of a data
//! set's top-level elements as raw bytes), [`charset`] (Specific Character Set decoding with
//! ISO 2022 code extensions, DCM-04), [`record`] (what the index keeps of an instance),
//! [`objects`] (the object store), [`scp`] and [`source`] (the SCP), [`find`] (C-FIND over the
//! index), [`complete`] (study complete), [`scu`] (echo, store, find as a client).

pub mod assoc;
pub mod charset;
pub mod complete;
pub mod dataset;
pub mod deid;
pub mod dimse;
pub mod find;
pub mod forward;
pub mod objects;
pub mod prefetch;
pub mod qr;
pub mod record;
pub mod scp;
pub mod scu;
pub mod source;
pub mod transcode;
pub mod uids;
pub mod web;
