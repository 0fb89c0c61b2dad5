// Starts Swagger UI or ReDoc on the OpenAPI document, fetched with the API key the
// browser keeps (the same key the web page at / uses); asks for the key when refused.
(() => {
  "use strict";
  const KEY_STORAGE = "fish-speech.api-key";
  const which = document.currentScript.dataset.ui;
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const message = document.getElementById("key-message");

  async function fetchSpec(key) {
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch("openapi.json", { headers });
    if (response.status === 401) return null;
    if (!response.ok) throw new Error(`openapi.json: HTTP ${response.status}`);
    return response.json();
  }

  function startSwagger(spec, key) {
    const ui = SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null, // the default validator badge is an image from another site
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
      layout: "BaseLayout",
      onComplete: () => {
        // Authorized from the start, so "Try it out" sends the key.
        if (key && spec.components?.securitySchemes?.BearerAuth) {
          ui.preauthorizeApiKey("BearerAuth", key);
        }
      },
    });
    window.swaggerUi = ui;
  }

  async function start() {
    const key = localStorage.getItem(KEY_STORAGE) || "";
    const spec = await fetchSpec(key);
    if (spec === null) {
      form.hidden = false;
      message.textContent = key ? "The stored key was refused." : "";
      input.focus();
      return;
    }
    form.hidden = true;
    // "Try it out" then calls this server at the address the page came from, also
    // behind a reverse proxy that serves it under a path prefix.
    spec.servers ??= [{ url: new URL(".", location.href).pathname.replace(/\/$/, "") || "/" }];
    if (which === "swagger") startSwagger(spec, key);
    else Redoc.init(spec, { expandResponses: "200" }, document.getElementById("redoc"));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, input.value.trim());
    start().catch(showError);
  });

  function showError(error) {
    form.hidden = false;
    message.textContent = String(error);
  }

  start().catch(showError);
})();
