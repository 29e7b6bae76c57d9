//! The common read-only API (`/api/hcp/common/v1`): the catalog and what each zone can do, so a
//! client can ask before it submits.

use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::security::ApiAuth;
use super::{ApiTags, State};
use crate::dto::{
    CapabilitiesDto, CatalogDto, FlavorDto, ImageDto, NetworkDto, ZoneCapabilitiesDto, ZoneDto,
};
use crate::error::ApiResult;
use crate::json::JsonBody;

pub(crate) struct CommonApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/common/v1", tag = "ApiTags::Common")]
impl CommonApi {
    /// Get the whole catalog
    ///
    /// Images, flavors, networks and zones in one answer.
    #[oai(path = "/catalog", method = "get", operation_id = "catalog")]
    async fn catalog(&self, _auth: ApiAuth) -> JsonBody<CatalogDto> {
        JsonBody::new(&CatalogDto::from(self.state.engine.catalog()))
    }

    /// List images
    #[oai(path = "/images", method = "get", operation_id = "listImages")]
    async fn images(&self, _auth: ApiAuth) -> JsonBody<Vec<ImageDto>> {
        JsonBody::new(
            &self
                .state
                .engine
                .catalog()
                .images
                .iter()
                .map(ImageDto::from)
                .collect::<Vec<_>>(),
        )
    }

    /// List flavors
    #[oai(path = "/flavors", method = "get", operation_id = "listFlavors")]
    async fn flavors(&self, _auth: ApiAuth) -> JsonBody<Vec<FlavorDto>> {
        JsonBody::new(
            &self
                .state
                .engine
                .catalog()
                .flavors
                .iter()
                .map(FlavorDto::from)
                .collect::<Vec<_>>(),
        )
    }

    /// List networks
    #[oai(path = "/networks", method = "get", operation_id = "listNetworks")]
    async fn networks(&self, _auth: ApiAuth) -> JsonBody<Vec<NetworkDto>> {
        JsonBody::new(
            &self
                .state
                .engine
                .catalog()
                .networks
                .iter()
                .map(NetworkDto::from)
                .collect::<Vec<_>>(),
        )
    }

    /// List zones
    #[oai(path = "/zones", method = "get", operation_id = "listZones")]
    async fn zones(&self, _auth: ApiAuth) -> JsonBody<Vec<ZoneDto>> {
        JsonBody::new(
            &self
                .state
                .engine
                .catalog()
                .zones
                .iter()
                .map(ZoneDto::from)
                .collect::<Vec<_>>(),
        )
    }

    /// Get what can be asked for
    ///
    /// With `zone`, what any host of that zone offers; without, what any host anywhere offers.
    #[oai(path = "/capabilities", method = "get", operation_id = "capabilities")]
    async fn capabilities(
        &self,
        _auth: ApiAuth,
        /// The zone to ask about.
        zone: Query<Option<String>>,
    ) -> ApiResult<JsonBody<CapabilitiesDto>> {
        Ok(JsonBody::new(&CapabilitiesDto::from(
            self.state.engine.capabilities(zone.0.as_deref())?,
        )))
    }

    /// List capabilities per zone
    #[oai(
        path = "/zones/capabilities",
        method = "get",
        operation_id = "zoneCapabilities"
    )]
    async fn zone_capabilities(
        &self,
        _auth: ApiAuth,
    ) -> ApiResult<JsonBody<Vec<ZoneCapabilitiesDto>>> {
        let engine = &self.state.engine;
        let mut out = Vec::new();
        for z in &engine.catalog().zones {
            out.push(ZoneCapabilitiesDto {
                zone: z.name.clone(),
                capabilities: engine.capabilities(Some(&z.name))?.into(),
            });
        }
        Ok(JsonBody::new(&out))
    }

    /// Get one zone's capabilities
    #[oai(
        path = "/zones/:zone/capabilities",
        method = "get",
        operation_id = "oneZoneCapabilities"
    )]
    async fn one_zone_capabilities(
        &self,
        _auth: ApiAuth,
        zone: Path<String>,
    ) -> ApiResult<JsonBody<ZoneCapabilitiesDto>> {
        let capabilities = self.state.engine.capabilities(Some(&zone.0)).map_err(|e| {
            hcp_core::Error::not_found("zone", &zone.0)
                .with_field(e.field().unwrap_or("zone").to_string())
        })?;
        Ok(JsonBody::new(&ZoneCapabilitiesDto {
            zone: zone.0,
            capabilities: capabilities.into(),
        }))
    }
}
