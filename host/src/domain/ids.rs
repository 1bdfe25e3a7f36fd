//! Typed ids: a `CampaignId` cannot be passed where a `ContactId` is meant.
//! Each is a UUID (v7 when Herald creates it, so ids sort by creation) and
//! travels as the bare UUID in JSON and SQL.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered after every id made before it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user (the `sub` of a bearer token); owns campaigns and contacts.
    UserId
);
id_type!(
    /// A campaign.
    CampaignId
);
id_type!(
    /// A contact of a user, shared by the user's campaigns.
    ContactId
);
id_type!(
    /// One message: a campaign's text to one contact.
    MessageId
);
id_type!(
    /// One `POST /campaigns/{id}/send` and the messages it queued.
    TaskId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_as_bare_uuids() {
        let id = CampaignId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.as_uuid()));
        assert_eq!(serde_json::from_str::<CampaignId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<CampaignId>().unwrap(), id);
    }

    #[test]
    fn new_ids_sort_by_creation() {
        let (first, second) = (MessageId::new(), MessageId::new());
        assert!(first < second);
    }
}
