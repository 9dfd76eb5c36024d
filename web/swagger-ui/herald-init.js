// Herald's Swagger UI initializer (served at /docs/herald-init.js, compiled
// into the binary), in place of swagger-ui-dist's own, which shows a demo API.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("api/v1/openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // "Try it out" calls this same origin, so the API key, a Bearer token
    // or the OAuth2 password login of "Authorize" apply as they would for
    // any client
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
});
