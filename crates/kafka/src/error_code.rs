//! The Kafka error codes this crate puts in responses, by the names Kafka's protocol guide gives them. The numbers
//! come from the protocol crate's [`ResponseError`] table rather than being typed here, so a code cannot be mistyped;
//! codes for the broker's own errors come from `weir_broker` (`BrokerError::kafka_error_code`).

use kafka_protocol::ResponseError;

/// No error (the protocol crate has no variant for it: it is the absence of one).
pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
pub const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
pub const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
pub const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = ResponseError::SaslAuthenticationFailed.code();
pub const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();
pub const GROUP_AUTHORIZATION_FAILED: i16 = ResponseError::GroupAuthorizationFailed.code();
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = ResponseError::ClusterAuthorizationFailed.code();
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();
pub const SECURITY_DISABLED: i16 = ResponseError::SecurityDisabled.code();
pub const OPERATION_NOT_ATTEMPTED: i16 = ResponseError::OperationNotAttempted.code();
pub const INVALID_PRINCIPAL_TYPE: i16 = ResponseError::InvalidPrincipalType.code();
pub const RESOURCE_NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
pub const DUPLICATE_RESOURCE: i16 = ResponseError::DuplicateResource.code();
pub const UNACCEPTABLE_CREDENTIAL: i16 = ResponseError::UnacceptableCredential.code();
/// A produced batch whose records are not what its header says (set by the broker; named here for tests).
pub const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers Kafka's protocol guide lists, so a change in the protocol crate's table would show.
    #[test]
    fn the_codes_are_kafkas() {
        let expected = [
            (UNKNOWN_TOPIC_OR_PARTITION, 3),
            (INVALID_REQUIRED_ACKS, 21),
            (UNSUPPORTED_SASL_MECHANISM, 33),
            (ILLEGAL_SASL_STATE, 34),
            (UNSUPPORTED_VERSION, 35),
            (INVALID_REQUEST, 42),
            (KAFKA_STORAGE_ERROR, 56),
            (SASL_AUTHENTICATION_FAILED, 58),
            (INVALID_RECORD, 87),
            (TOPIC_AUTHORIZATION_FAILED, 29),
            (GROUP_AUTHORIZATION_FAILED, 30),
            (CLUSTER_AUTHORIZATION_FAILED, 31),
            (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53),
            (SECURITY_DISABLED, 54),
            (OPERATION_NOT_ATTEMPTED, 55),
            (INVALID_PRINCIPAL_TYPE, 67),
            (RESOURCE_NOT_FOUND, 91),
            (DUPLICATE_RESOURCE, 92),
            (UNACCEPTABLE_CREDENTIAL, 93),
        ];
        for (named, number) in expected {
            assert_eq!(named, number);
        }
        assert_eq!(ResponseError::try_from_code(NONE), None);
    }
}
