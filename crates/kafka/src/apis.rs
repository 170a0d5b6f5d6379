//! The one table of the Kafka APIs weir serves: for each, the versions served and whether a connection may send it
//! before SASL authentication. ApiVersions' answer, the decoder's "is this API and version served" check and the
//! authentication gate are all read from [`APIS`], and the listener's dispatch is checked against it when the crate
//! compiles (`dispatch!`), so adding an API is one line here plus its arm there, and neither can be forgotten.

use kafka_protocol::messages::ApiKey;

/// One API weir serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Api {
    pub key: ApiKey,
    /// The API's name in Kafka's protocol guide, for logs.
    pub name: &'static str,
    /// The versions weir answers (further narrowed to what the protocol crate can decode, see [`supported`]).
    pub min_version: i16,
    pub max_version: i16,
    /// Whether a connection may send it before it has authenticated, when the listener requires SASL.
    pub before_authentication: bool,
}

const fn api(key: ApiKey, name: &'static str, min_version: i16, max_version: i16, before_authentication: bool) -> Api {
    Api { key, name, min_version, max_version, before_authentication }
}

/// Every API weir serves, in API-key order.
pub const APIS: &[Api] = &[
    api(ApiKey::Produce, "Produce", 3, 9, false),
    api(ApiKey::Fetch, "Fetch", 4, 12, false),
    api(ApiKey::ListOffsets, "ListOffsets", 1, 7, false),
    api(ApiKey::Metadata, "Metadata", 1, 12, false),
    api(ApiKey::OffsetCommit, "OffsetCommit", 2, 8, false),
    api(ApiKey::OffsetFetch, "OffsetFetch", 1, 7, false),
    api(ApiKey::FindCoordinator, "FindCoordinator", 0, 4, false),
    api(ApiKey::JoinGroup, "JoinGroup", 0, 9, false),
    api(ApiKey::Heartbeat, "Heartbeat", 0, 4, false),
    api(ApiKey::LeaveGroup, "LeaveGroup", 0, 5, false),
    api(ApiKey::SyncGroup, "SyncGroup", 0, 5, false),
    api(ApiKey::DescribeGroups, "DescribeGroups", 0, 5, false),
    api(ApiKey::ListGroups, "ListGroups", 0, 4, false),
    // v0 must be advertised: librdkafka detects SASL support by it, though it then uses v1.
    api(ApiKey::SaslHandshake, "SaslHandshake", 0, 1, true),
    api(ApiKey::ApiVersions, "ApiVersions", 0, 3, true),
    api(ApiKey::CreateTopics, "CreateTopics", 2, 7, false),
    api(ApiKey::DeleteTopics, "DeleteTopics", 1, 6, false),
    api(ApiKey::DeleteRecords, "DeleteRecords", 0, 2, false),
    api(ApiKey::InitProducerId, "InitProducerId", 0, 4, false),
    api(ApiKey::OffsetForLeaderEpoch, "OffsetForLeaderEpoch", 2, 4, false),
    // Transactions as Kafka 3.x clients use them; v4+ of these belong to KIP-890's broker-side verification.
    api(ApiKey::AddPartitionsToTxn, "AddPartitionsToTxn", 0, 3, false),
    api(ApiKey::AddOffsetsToTxn, "AddOffsetsToTxn", 0, 3, false),
    api(ApiKey::EndTxn, "EndTxn", 0, 3, false),
    api(ApiKey::TxnOffsetCommit, "TxnOffsetCommit", 0, 3, false),
    api(ApiKey::DescribeAcls, "DescribeAcls", 1, 3, false),
    api(ApiKey::CreateAcls, "CreateAcls", 1, 3, false),
    api(ApiKey::DeleteAcls, "DeleteAcls", 1, 3, false),
    api(ApiKey::DescribeConfigs, "DescribeConfigs", 1, 4, false),
    api(ApiKey::AlterConfigs, "AlterConfigs", 0, 2, false),
    api(ApiKey::DescribeLogDirs, "DescribeLogDirs", 1, 4, false),
    api(ApiKey::SaslAuthenticate, "SaslAuthenticate", 0, 2, true),
    api(ApiKey::CreatePartitions, "CreatePartitions", 0, 3, false),
    api(ApiKey::DeleteGroups, "DeleteGroups", 0, 2, false),
    api(ApiKey::ElectLeaders, "ElectLeaders", 0, 2, false),
    api(ApiKey::IncrementalAlterConfigs, "IncrementalAlterConfigs", 0, 1, false),
    api(ApiKey::OffsetDelete, "OffsetDelete", 0, 0, false),
    api(ApiKey::DescribeUserScramCredentials, "DescribeUserScramCredentials", 0, 0, false),
    api(ApiKey::AlterUserScramCredentials, "AlterUserScramCredentials", 0, 0, false),
    api(ApiKey::DescribeCluster, "DescribeCluster", 0, 1, false),
    api(ApiKey::DescribeProducers, "DescribeProducers", 0, 0, false),
    api(ApiKey::DescribeTransactions, "DescribeTransactions", 0, 0, false),
    api(ApiKey::ListTransactions, "ListTransactions", 0, 1, false),
    api(ApiKey::ConsumerGroupHeartbeat, "ConsumerGroupHeartbeat", 0, 1, false),
    api(ApiKey::ConsumerGroupDescribe, "ConsumerGroupDescribe", 0, 1, false),
    api(ApiKey::GetTelemetrySubscriptions, "GetTelemetrySubscriptions", 0, 0, false),
    api(ApiKey::PushTelemetry, "PushTelemetry", 0, 0, false),
];

/// The table's entry for an API key off the wire, if weir serves it.
pub fn find(api_key: i16) -> Option<&'static Api> {
    APIS.iter().find(|a| a.key as i16 == api_key)
}

/// The versions of `api` weir answers: the table's range intersected with what the protocol crate knows, or `None`
/// if weir does not serve it. This is what ApiVersions advertises and what the decoder accepts.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    let ours = find(api as i16)?;
    let known = api.valid_versions();
    let (min, max) = (ours.min_version.max(known.min), ours.max_version.min(known.max));
    (min <= max).then_some((min, max))
}

/// Whether a connection that has not authenticated may send this API key (ApiVersions and the SASL requests); an
/// unknown key may not.
pub fn allowed_before_authentication(api_key: i16) -> bool {
    find(api_key).is_some_and(|a| a.before_authentication)
}

/// True if `keys` are exactly the table's APIs, each once: evaluated by [`dispatch!`] when the crate compiles.
pub(crate) const fn is_the_table(keys: &[ApiKey]) -> bool {
    if keys.len() != APIS.len() {
        return false;
    }
    // Same length, every key in the table and no key twice: the same set.
    let mut i = 0;
    while i < keys.len() {
        if !in_table(keys[i]) {
            return false;
        }
        let mut j = i + 1;
        while j < keys.len() {
            if keys[i] as i16 == keys[j] as i16 {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const fn in_table(key: ApiKey) -> bool {
    let mut i = 0;
    while i < APIS.len() {
        if APIS[i].key as i16 == key as i16 {
            return true;
        }
        i += 1;
    }
    false
}

/// A `match` on a decoded request body with one arm per served API, `Variant(pattern) => expression`: the arms must
/// name exactly the APIs of [`APIS`], each once, or the crate does not compile. A body of another API (which the
/// decoder never lets through) is an error.
macro_rules! dispatch {
    ($body:expr, { $( $api:ident($request:pat) => $handler:expr ),* $(,)? }) => {{
        const _: () = assert!(
            $crate::apis::is_the_table(&[$(::kafka_protocol::messages::ApiKey::$api),*]),
            "the dispatch's arms must be exactly the APIs of apis::APIS, each once"
        );
        match $body {
            $( ::kafka_protocol::messages::RequestKind::$api($request) => $handler, )*
            _ => ::anyhow::bail!("a request of an API missing from the API table"),
        }
    }};
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_served_at_some_version_the_protocol_crate_knows() {
        for api in APIS {
            let (min, max) = supported(api.key).unwrap_or_else(|| panic!("{} has no version in common", api.name));
            assert!(min <= max);
            assert_eq!(format!("{:?}", api.key), api.name, "the name is the API's own");
        }
    }

    #[test]
    fn the_table_is_in_key_order_without_repeats() {
        assert!(APIS.windows(2).all(|w| (w[0].key as i16) < (w[1].key as i16)));
    }

    #[test]
    fn only_api_versions_and_sasl_before_authentication() {
        let before: Vec<ApiKey> = APIS.iter().filter(|a| a.before_authentication).map(|a| a.key).collect();
        assert_eq!(before, [ApiKey::SaslHandshake, ApiKey::ApiVersions, ApiKey::SaslAuthenticate]);
        assert!(!allowed_before_authentication(ApiKey::Metadata as i16));
        assert!(!allowed_before_authentication(-1));
        assert!(!allowed_before_authentication(i16::MAX));
    }

    #[test]
    fn the_dispatch_check_refuses_a_missing_an_extra_or_a_repeated_api() {
        let all: Vec<ApiKey> = APIS.iter().map(|a| a.key).collect();
        assert!(is_the_table(&all));
        assert!(!is_the_table(&all[1..]));
        let mut extra = all.clone();
        extra.push(ApiKey::DescribeQuorum);
        assert!(!is_the_table(&extra));
        let mut replaced = all.clone();
        replaced[0] = ApiKey::DescribeQuorum;
        assert!(!is_the_table(&replaced));
        let mut repeated = all.clone();
        repeated[0] = repeated[1];
        assert!(!is_the_table(&repeated));
    }
}
