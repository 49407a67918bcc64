/* GET /services/NAME/logs?follow=1 (SPEC section 7): a followed log as one streamed
 * text/plain answer. A client that lets more than LOGS_FOLLOW_UNREAD_MAX bytes wait (plus
 * room for the tail it asked for) gets a last line saying so and the end of the answer. */
#ifndef NANNY_LOGS_FOLLOW_H
#define NANNY_LOGS_FOLLOW_H

#include "core/supervisor.h"
#include "http/server.h"

#define LOGS_FOLLOW_UNREAD_MAX (1024 * 1024)
#define LOGS_FOLLOW_TAIL_MAX   (16 * 1024 * 1024) /* room for the tail, on top */

/* Answers req (from its handler) with svc's last tail lines, then its new lines as they
 * are written, until the client goes or the follow ends (the last line says why); 409
 * cannot_follow when it cannot start. */
void logs_follow_reply(struct supervisor *sup, struct service *svc, unsigned tail,
                       struct request *req);

#endif
