/* gate.c - the WebSocket upgrade gate (see gate.h). */
#include "net/gate.h"

#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "net/answer.h"
#include "net/bearer.h"
#include "net/conn.h"
#include "net/peers.h"
#include "wire/auth.h"
#include "work/app.h"

int gate_is_ws_path(struct lws *wsi)
{
    char uri[64];
    int n = lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
    return n > 0 && strcmp(uri, "/ws") == 0;
}

int gate_check(struct conns *cs, struct lws *wsi)
{
    const struct config *cfg = cs->app->cfg;
    char addr[PEERS_ADDR_MAX];
    peers_client_addr(cfg, wsi, addr);
    if (!gate_is_ws_path(wsi))
        return answer_refusal(wsi, HTTP_STATUS_NOT_FOUND, "Not Found");
    if (cs->draining)
        return answer_refusal(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Server Shutting Down");
    /* RFC 6455 4.2.2: we speak version 13 only, and say so. */
    char version[8];
    if (lws_hdr_copy(wsi, version, sizeof(version), WSI_TOKEN_VERSION) <= 0 ||
        strcmp(version, "13") != 0) {
        log_info("event=ws_refused status=ANSWER_UPGRADE_REQUIRED addr=%s reason=version", addr);
        return answer_refusal(wsi, ANSWER_UPGRADE_REQUIRED,
                              "Upgrade Required: Sec-WebSocket-Version 13");
    }

    char origin[256];
    int olen = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (olen >= (int)sizeof(origin) ||
        (olen > 0 && lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0) ||
        !auth_origin_allowed(cfg, olen > 0 ? origin : NULL)) {
        log_info("event=ws_refused status=403 addr=%s reason=origin", addr);
        return answer_refusal(wsi, HTTP_STATUS_FORBIDDEN, "Origin Not Allowed");
    }
    if (cs->n >= cfg->max_connections) {
        log_warn("event=ws_refused status=503 addr=%s reason=max_connections conns=%d", addr,
                 cs->n);
        return answer_refusal(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Too Many Connections");
    }
    if (peers_count(cs->peers, addr) >= cfg->max_connections_per_ip) {
        log_warn("event=ws_refused status=503 addr=%s reason=max_connections_per_ip", addr);
        return answer_refusal(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                              "Too Many Connections From This Address");
    }
    if (auth_required(cfg)) {
        char sub[UUID_STR_LEN + 1];
        const char *why = "";
        if (bearer_check(cfg, wsi, 1, sub, &why) != 0) {
            log_info("event=ws_refused status=401 addr=%s reason=\"%s\"", addr, why);
            return answer_refusal(wsi, HTTP_STATUS_UNAUTHORIZED, "Unauthorized");
        }
    }
    return 0;
}
