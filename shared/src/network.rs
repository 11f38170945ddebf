//! Stellar networks are told apart by their passphrase; every transaction hash and every
//! Stellar Asset Contract id is derived from the SHA-256 of it (the network id).

use sha2::{Digest, Sha256};

/// The passphrase of the public network.
pub const PUBNET_PASSPHRASE: &str = "Public Global Stellar Network ; September 2015";
/// The passphrase of the test network.
pub const TESTNET_PASSPHRASE: &str = "Test SDF Network ; September 2015";

/// A network, known by its passphrase, with its id computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    passphrase: String,
    id: [u8; 32],
}

impl Network {
    /// The network with this passphrase.
    pub fn new(passphrase: impl Into<String>) -> Self {
        let passphrase = passphrase.into();
        let id = Sha256::digest(passphrase.as_bytes()).into();
        Self { passphrase, id }
    }

    /// The public network.
    pub fn pubnet() -> Self {
        Self::new(PUBNET_PASSPHRASE)
    }

    /// The test network.
    pub fn testnet() -> Self {
        Self::new(TESTNET_PASSPHRASE)
    }

    /// The passphrase, as configured.
    pub fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// SHA-256 of the passphrase.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubnet_id_is_sha256_of_passphrase() {
        assert_eq!(
            hex::encode(Network::pubnet().id()),
            "7ac33997544e3175d266bd022439b22cdb16508c01163f26e5cb2a3e1045a979"
        );
    }
}
