//! Domain values stored as text: statuses, variants, consent sources, window
//! bounds and time zones. Each is written with its string form and read back
//! through its parser, on any database that stores text; a value the parser
//! refuses is corrupt data and fails the read (never a silent default).

use std::fmt::Display;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::domain::campaign::{CampaignStatus, QuietHours};
use crate::domain::contact::ConsentSource;
use crate::domain::message::MessageStatus;
use crate::domain::variant::Variant;
use crate::domain::window::{TimeOfDay, Zone};

/// Decodes a text column through `T`'s parser.
fn decode_text<'r, DB, T>(value: <DB as Database>::ValueRef<'r>) -> Result<T, BoxDynError>
where
    DB: Database,
    String: Decode<'r, DB>,
    T: FromStr<Err: Display>,
{
    let text = <String as Decode<DB>>::decode(value)?;
    text.parse()
        .map_err(|e| format!("stored value {text:?} is not valid: {e}").into())
}

macro_rules! text_columns {
    ($($value:ty),+ $(,)?) => {$(
        impl<DB: Database> Type<DB> for $value
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $value
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                self.to_string().encode(buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $value
        where
            String: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                decode_text::<DB, Self>(value)
            }
        }
    )+};
}

text_columns!(
    CampaignStatus,
    QuietHours,
    MessageStatus,
    Variant,
    ConsentSource,
    TimeOfDay,
    Zone
);

/// `Option<T>` as a parameter on any database (`NULL` for `None`). sqlx
/// implements `Encode` for `Option` once per database, which the generic store
/// could only use by naming every optional type in every where-clause.
pub struct Nullable<T>(pub Option<T>);

impl<DB: Database, T: Type<DB>> Type<DB> for Nullable<T> {
    fn type_info() -> DB::TypeInfo {
        T::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        T::compatible(ty)
    }
}

impl<'q, DB: Database, T: Encode<'q, DB>> Encode<'q, DB> for Nullable<T> {
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.0 {
            Some(value) => value.encode_by_ref(buf),
            None => Ok(IsNull::Yes),
        }
    }
}
