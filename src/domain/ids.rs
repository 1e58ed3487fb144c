//! Typed ids: an organization's, an agent's and a call's id are different
//! things, so a function taking one cannot be handed another. Each is a
//! UUID, encoded exactly as one (in the spool, in Redis, in PostgreSQL).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The UUID, for the SQL and Redis boundary.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                $name(id)
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

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(raw).map($name)
            }
        }
    };
}

id!(
    /// An organization's (a tenant's) id.
    OrgId
);
id!(
    /// An AI agent's id.
    AgentId
);
id!(
    /// A call's id: derived from the gateway's call id, the key of its
    /// record and its lease.
    CallId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_encodes_as_its_uuid() {
        let uuid = Uuid::from_u128(0x1234);
        let call = CallId(uuid);
        assert_eq!(call.to_string(), uuid.to_string());
        assert_eq!(call.to_string().parse::<CallId>().unwrap(), call);
        assert_eq!(
            rmp_serde::to_vec(&call).unwrap(),
            rmp_serde::to_vec(&uuid).unwrap()
        );
    }
}
