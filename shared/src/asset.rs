//! Assets: native lumens or a credit asset (code + issuer). Codes are kept without their
//! zero padding; the XDR kind (alphanum4 / alphanum12) is kept as written on chain.

use std::fmt;

use crate::address::AccountId;

/// An asset code of 1 to 12 bytes, stored inline without padding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssetCode {
    bytes: [u8; 12],
    len: u8,
}

impl AssetCode {
    /// Takes a code as written in XDR, dropping the trailing zero padding.
    pub fn from_padded(padded: &[u8]) -> Self {
        let len = padded
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1)
            .min(12);
        let mut bytes = [0u8; 12];
        bytes[..len].copy_from_slice(&padded[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// A code from text: 1 to 12 ASCII letters and digits.
    pub fn parse(code: &str) -> Option<Self> {
        let valid =
            (1..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Self::from_padded(code.as_bytes()))
    }

    /// The code's bytes without padding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The code as text (non-UTF-8 bytes, which valid assets never have, are replaced).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// The kind a code of this length takes on chain.
    pub fn natural_kind(&self) -> CreditKind {
        if self.len <= 4 {
            CreditKind::Alphanum4
        } else {
            CreditKind::Alphanum12
        }
    }
}

impl fmt::Display for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Which credit asset layout the chain used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CreditKind {
    /// `credit_alphanum4`
    Alphanum4,
    /// `credit_alphanum12`
    Alphanum12,
}

/// An asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// Lumens.
    Native,
    /// An issued asset.
    Credit {
        /// alphanum4 or alphanum12.
        kind: CreditKind,
        /// The code, without padding.
        code: AssetCode,
        /// The issuing account.
        issuer: AccountId,
    },
}

/// Why text is not an asset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an asset: expected `native` or `CODE:ISSUER`")]
pub struct InvalidAsset(pub String);

impl Asset {
    /// Horizon's `asset_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Credit {
                kind: CreditKind::Alphanum4,
                ..
            } => "credit_alphanum4",
            Self::Credit {
                kind: CreditKind::Alphanum12,
                ..
            } => "credit_alphanum12",
        }
    }

    /// The code, for credit assets.
    pub fn code(&self) -> Option<&AssetCode> {
        match self {
            Self::Native => None,
            Self::Credit { code, .. } => Some(code),
        }
    }

    /// The issuer, for credit assets.
    pub fn issuer(&self) -> Option<&AccountId> {
        match self {
            Self::Native => None,
            Self::Credit { issuer, .. } => Some(issuer),
        }
    }

    /// The SEP-11 form: `native` or `CODE:ISSUER`. This is also the canonical key used in
    /// storage and in the API's `asset` filter.
    pub fn canonical(&self) -> String {
        match self {
            Self::Native => "native".to_owned(),
            Self::Credit { code, issuer, .. } => format!("{code}:{issuer}"),
        }
    }

    /// Parses the SEP-11 form (as in contract events and the API's `asset` parameter).
    pub fn parse_canonical(text: &str) -> Result<Self, InvalidAsset> {
        if text == "native" {
            return Ok(Self::Native);
        }
        let invalid = || InvalidAsset(text.to_owned());
        let (code, issuer) = text.split_once(':').ok_or_else(invalid)?;
        let code = AssetCode::parse(code).ok_or_else(invalid)?;
        let issuer = issuer.parse::<AccountId>().map_err(|_| invalid())?;
        Ok(Self::Credit {
            kind: code.natural_kind(),
            code,
            issuer,
        })
    }

    /// The asset in XDR form.
    pub fn to_xdr(&self) -> stellar_xdr::Asset {
        match self {
            Self::Native => stellar_xdr::Asset::Native,
            Self::Credit { kind, code, issuer } => {
                let issuer = stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(
                    stellar_xdr::Uint256(issuer.0),
                ));
                match kind {
                    CreditKind::Alphanum4 => {
                        let mut padded = [0u8; 4];
                        let n = code.as_bytes().len().min(4);
                        padded[..n].copy_from_slice(&code.as_bytes()[..n]);
                        stellar_xdr::Asset::CreditAlphanum4(stellar_xdr::AlphaNum4 {
                            asset_code: stellar_xdr::AssetCode4(padded),
                            issuer,
                        })
                    }
                    CreditKind::Alphanum12 => {
                        let mut padded = [0u8; 12];
                        padded[..code.as_bytes().len()].copy_from_slice(code.as_bytes());
                        stellar_xdr::Asset::CreditAlphanum12(stellar_xdr::AlphaNum12 {
                            asset_code: stellar_xdr::AssetCode12(padded),
                            issuer,
                        })
                    }
                }
            }
        }
    }

    /// The id of this asset's Stellar Asset Contract on the network with `network_id`:
    /// SHA-256 of the `HashIdPreimage::ContractId` built from the asset.
    pub fn stellar_asset_contract_id(&self, network_id: [u8; 32]) -> [u8; 32] {
        let preimage =
            stellar_xdr::HashIdPreimage::ContractId(stellar_xdr::HashIdPreimageContractId {
                network_id: stellar_xdr::Hash(network_id),
                contract_id_preimage: stellar_xdr::ContractIdPreimage::Asset(self.to_xdr()),
            });
        crate::hashing::xdr_sha256(&preimage)
    }
}

impl From<&stellar_xdr::Asset> for Asset {
    fn from(asset: &stellar_xdr::Asset) -> Self {
        match asset {
            stellar_xdr::Asset::Native => Self::Native,
            stellar_xdr::Asset::CreditAlphanum4(a) => Self::Credit {
                kind: CreditKind::Alphanum4,
                code: AssetCode::from_padded(&a.asset_code.0),
                issuer: (&a.issuer).into(),
            },
            stellar_xdr::Asset::CreditAlphanum12(a) => Self::Credit {
                kind: CreditKind::Alphanum12,
                code: AssetCode::from_padded(&a.asset_code.0),
                issuer: (&a.issuer).into(),
            },
        }
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;

    #[test]
    fn native_sac_id_on_pubnet() {
        // The lumens contract id on pubnet, as stellar-etl reports it in the token
        // transfer export of ledger 30820015.
        let id = Asset::Native.stellar_asset_contract_id(Network::pubnet().id());
        assert_eq!(
            stellar_strkey::Contract(id).to_string().as_str(),
            "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA"
        );
    }

    #[test]
    fn canonical_form_round_trips() {
        let text = "TREEP:GAVBWV24PZ6POVQGQO5UEWGO3TO7ERYXRFFI6V5VH3BMTPDZOHVOFA3G";
        let asset = Asset::parse_canonical(text).expect("valid");
        assert_eq!(asset.type_name(), "credit_alphanum12");
        assert_eq!(asset.canonical(), text);
        assert_eq!(Asset::from(&asset.to_xdr()), asset);
        for bad in [
            "",
            "USD",
            "USD:",
            ":GAVBWV24PZ6POVQGQO5UEWGO3TO7ERYXRFFI6V5VH3BMTPDZOHVOFA3G",
            "TOOLONGCODE13:GAVBWV24PZ6POVQGQO5UEWGO3TO7ERYXRFFI6V5VH3BMTPDZOHVOFA3G",
            "US$:G",
        ] {
            assert!(Asset::parse_canonical(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn padding_is_dropped() {
        assert_eq!(AssetCode::from_padded(b"USD\0").as_bytes(), b"USD");
        assert_eq!(AssetCode::from_padded(b"\0\0\0\0").as_bytes(), b"");
    }
}
