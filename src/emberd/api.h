/* SPDX-License-Identifier: Apache-2.0 */
#ifndef EMBERD_API_H
#define EMBERD_API_H

#include "server.h"

/* The request handler of the REST API; ctx is the struct emberd. */
void api_handle(void *ctx, const struct request *req, struct response *resp);

#endif
