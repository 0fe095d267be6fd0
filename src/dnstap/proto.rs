//! The dnstap protobuf schema (dnstap.proto of the dnstap project, proto2,
//! released under CC0), the parts resolvd writes, as prost messages
//! derived by hand so the build needs no protoc. Field numbers and types
//! are the schema's; fields resolvd never sets (policy, http_protocol,
//! query_zone) are left out, which protobuf readers treat as absent.

/// `dnstap.Dnstap`: the envelope of every frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// Server identity (`[dnstap] identity`).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    /// Server version.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    /// Always [`DnstapType::Message`].
    #[prost(enumeration = "DnstapType", required, tag = "15")]
    pub r#type: i32,
    /// The logged message.
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
}

/// `dnstap.Dnstap.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DnstapType {
    /// A `Message`.
    Message = 1,
}

/// `dnstap.SocketFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketFamily {
    /// IPv4.
    Inet = 1,
    /// IPv6.
    Inet6 = 2,
}

/// `dnstap.SocketProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketProtocol {
    /// DNS over UDP.
    Udp = 1,
    /// DNS over TCP.
    Tcp = 2,
    /// DNS over TLS (RFC 7858).
    Dot = 3,
    /// DNS over HTTPS (RFC 8484).
    Doh = 4,
}

/// `dnstap.Message.Type`, the kinds resolvd logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// A query we sent to an authoritative server.
    ResolverQuery = 3,
    /// Its reply.
    ResolverResponse = 4,
    /// A query a client sent us.
    ClientQuery = 5,
    /// Our reply to it.
    ClientResponse = 6,
}

/// `dnstap.Message`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// What this message is.
    #[prost(enumeration = "MessageType", required, tag = "1")]
    pub r#type: i32,
    /// IPv4 or IPv6.
    #[prost(enumeration = "SocketFamily", optional, tag = "2")]
    pub socket_family: Option<i32>,
    /// The transport.
    #[prost(enumeration = "SocketProtocol", optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    /// The querier's address (network order bytes).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    /// The responder's address.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    /// The querier's port.
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    /// The responder's port.
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    /// When the query was read or sent: seconds since the epoch.
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    /// ... and nanoseconds.
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    /// The query in wire form.
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    /// When the reply was sent or read: seconds since the epoch.
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    /// ... and nanoseconds.
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    /// The reply in wire form.
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
}
