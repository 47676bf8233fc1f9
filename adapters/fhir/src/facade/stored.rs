//! Resources of the FHIR resource store (written by the `fhir_store` sink): read, vread and
//! search in SQL over the index rows. Visible to a caller whose read scope holds the
//! resource's facility; to an expert, only resources about the patients of consultations
//! they own or owned (whatever facility sent them: the case packet comes from the requesting
//! facility).

use huizhen_core::store::fhir::{Criterion, FhirQuery, FhirRow};
use serde_json::Value;

use super::context::{Ctx, Served, with_meta};
use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::ResourceDef;

fn served(row: FhirRow) -> Result<Served, Fail> {
    let json: Value = serde_json::from_str(&row.body).map_err(|e| {
        Fail::store(&format!(
            "stored {}/{} v{} is not JSON: {e}",
            row.resource_type, row.id, row.version
        ))
    })?;
    Ok(Served {
        json: with_meta(json, row.version, row.last_updated),
        last_updated: row.last_updated,
        facility: Some(row.facility),
    })
}

/// True when the caller may see `row`.
async fn visible(ctx: &Ctx, row: &FhirRow) -> Result<bool, Fail> {
    if let Some(view) = ctx.expert().await? {
        let about = if row.resource_type == "Patient" {
            Some(&row.id)
        } else {
            row.patient.as_ref()
        };
        return Ok(about.is_some_and(|p| view.stored_patients.contains(p)));
    }
    Ok(ctx.caller.scope.allows(&row.facility))
}

pub async fn read(
    ctx: &Ctx,
    def: &ResourceDef,
    id: &str,
    version: Option<i64>,
) -> Result<Option<Served>, Fail> {
    let row = match version {
        None => ctx.s.store.fhir_read(def.name, id).await?,
        Some(v) => ctx.s.store.fhir_vread(def.name, id, v).await?,
    };
    let Some(row) = row else { return Ok(None) };
    if !visible(ctx, &row).await? {
        ctx.audit(
            &ctx.event(
                "fhir.read",
                def.name,
                id,
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&row.facility),
        )
        .await?;
        return Ok(None);
    }
    served(row).map(Some)
}

/// The criteria that keep a search within what the caller may see, and the facilities.
async fn restrict(
    ctx: &Ctx,
    def: &ResourceDef,
    criteria: &mut Vec<Criterion>,
) -> Result<Option<Vec<String>>, Fail> {
    if let Some(view) = ctx.expert().await? {
        criteria.push(if def.name == "Patient" {
            Criterion::Id(view.stored_patients.clone())
        } else {
            Criterion::Patient(view.stored_patients.clone())
        });
        return Ok(None);
    }
    Ok(ctx.caller.scope.facilities())
}

pub async fn search(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let mut criteria = req.criteria.clone();
    let facilities = restrict(ctx, def, &mut criteria).await?;
    let page = ctx
        .s
        .store
        .fhir_search(&FhirQuery {
            resource_type: def.name.to_owned(),
            criteria,
            facilities,
            limit: i64::try_from(need).unwrap_or(i64::MAX),
            offset: 0,
        })
        .await?;
    let rows = page
        .rows
        .into_iter()
        .map(served)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, usize::try_from(page.total).unwrap_or(0)))
}

/// Every stored resource about the Patients `patients` that the caller may see (for
/// `$everything`), at most `limit` per type.
pub async fn about_patients(
    ctx: &Ctx,
    def: &ResourceDef,
    patients: &[String],
    extra: &[Criterion],
    limit: usize,
) -> Result<Vec<Served>, Fail> {
    if patients.is_empty() {
        return Ok(Vec::new());
    }
    let mut criteria = extra.to_vec();
    criteria.push(if def.name == "Patient" {
        Criterion::Id(patients.to_vec())
    } else {
        Criterion::Patient(patients.to_vec())
    });
    let facilities = restrict(ctx, def, &mut criteria).await?;
    let page = ctx
        .s
        .store
        .fhir_search(&FhirQuery {
            resource_type: def.name.to_owned(),
            criteria,
            facilities,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            offset: 0,
        })
        .await?;
    page.rows.into_iter().map(served).collect()
}
