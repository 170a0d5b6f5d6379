//! The Kafka protocol error codes the broker's errors map to, by the names Kafka's protocol guide gives them. The
//! broker does not depend on a protocol crate (the Kafka adapter does), so the numbers are written here, once, and a
//! test checks them against the guide's table.

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_CONFIG: i16 = 40;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
pub const INVALID_RECORD: i16 = 87;
pub const PRODUCER_FENCED: i16 = 90;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

#[cfg(test)]
mod tests {
    use super::*;

    /// The names and numbers of Kafka's protocol guide ("Error Codes"), so a typo here shows.
    #[test]
    fn the_codes_are_the_protocol_guides() {
        let guide = [
            (UNKNOWN_SERVER_ERROR, -1),
            (OFFSET_OUT_OF_RANGE, 1),
            (CORRUPT_MESSAGE, 2),
            (UNKNOWN_TOPIC_OR_PARTITION, 3),
            (MESSAGE_TOO_LARGE, 10),
            (COORDINATOR_NOT_AVAILABLE, 15),
            (INVALID_TOPIC_EXCEPTION, 17),
            (ILLEGAL_GENERATION, 22),
            (INCONSISTENT_GROUP_PROTOCOL, 23),
            (INVALID_GROUP_ID, 24),
            (UNKNOWN_MEMBER_ID, 25),
            (INVALID_SESSION_TIMEOUT, 26),
            (REBALANCE_IN_PROGRESS, 27),
            (TOPIC_ALREADY_EXISTS, 36),
            (INVALID_PARTITIONS, 37),
            (INVALID_CONFIG, 40),
            (OUT_OF_ORDER_SEQUENCE_NUMBER, 45),
            (INVALID_PRODUCER_EPOCH, 47),
            (INVALID_TXN_STATE, 48),
            (INVALID_PRODUCER_ID_MAPPING, 49),
            (INVALID_TRANSACTION_TIMEOUT, 50),
            (CONCURRENT_TRANSACTIONS, 51),
            (KAFKA_STORAGE_ERROR, 56),
            (NON_EMPTY_GROUP, 68),
            (GROUP_ID_NOT_FOUND, 69),
            (MEMBER_ID_REQUIRED, 79),
            (FENCED_INSTANCE_ID, 82),
            (ELECTION_NOT_NEEDED, 84),
            (GROUP_SUBSCRIBED_TO_TOPIC, 86),
            (INVALID_RECORD, 87),
            (PRODUCER_FENCED, 90),
            (FENCED_MEMBER_EPOCH, 110),
            (STALE_MEMBER_EPOCH, 113),
            (INVALID_REGULAR_EXPRESSION, 128),
            (TRANSACTIONAL_ID_NOT_FOUND, 105),
        ];
        for (name, number) in guide {
            assert_eq!(name, number);
        }
    }
}
