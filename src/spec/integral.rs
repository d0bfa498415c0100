//! Whole numbers in JSON: JSON Schema counts `3412.0` as an integer (a
//! number with no fraction), so the API accepts it wherever its schema
//! says integer.

use serde::{Deserialize, Deserializer, de::Error};

/// A whole number, written with or without `.0`.
pub fn value<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    let whole = number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))?;
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

/// An optional whole number.
pub fn option<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped<T: TryFrom<i64>>(#[serde(deserialize_with = "value")] T);
    Ok(Option::<Wrapped<T>>::deserialize(d)?.map(|Wrapped(v)| v))
}
