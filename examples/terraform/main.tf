# One VM in HCP, with the catalog it is chosen from. hcp-terraform's tests run this file as
# written (hcp-terraform/tests/terraform.rs).
#
#   export HCP_URL=http://127.0.0.1:8080      # and HCP_TOKEN=... when the service wants one
#   terraform init && terraform apply -var project=team-a
#
# terraform-provider-hcp is installed from a provider mirror (see the README's Terraform section).

terraform {
  required_providers {
    hcp = {
      source  = "terraform.local/hcp/hcp"
      version = "0.1.0"
    }
  }
}

variable "project" {
  type        = string
  description = "The HCP project the VM belongs to."
}

variable "name" {
  type    = string
  default = "web-1"
}

variable "image" {
  type    = string
  default = "ubuntu-24.04"
}

variable "flavor" {
  type    = string
  default = "small"
}

variable "desired_power" {
  type    = string
  default = "running"
}

variable "zone" {
  type    = string
  default = null
}

variable "create_timeout" {
  type    = string
  default = "5m"
}

# hcp_vm marks user_data sensitive itself: plans never print it.
variable "user_data" {
  type    = string
  default = null
}

variable "tags" {
  type    = map(string)
  default = { team = "web" }
}

provider "hcp" {
  # url and token come from HCP_URL and HCP_TOKEN.
  project        = var.project
  create_timeout = var.create_timeout
  delete_timeout = "5m"
}

data "hcp_images" "all" {}
data "hcp_flavors" "all" {}
data "hcp_zones" "all" {}

data "hcp_capabilities" "first_zone" {
  zone = data.hcp_zones.all.zones[0].name
}

resource "hcp_vm" "web" {
  name          = var.name
  image         = var.image
  flavor        = var.flavor
  zone          = var.zone
  tags          = var.tags
  user_data     = var.user_data
  desired_power = var.desired_power
}

output "vm_id" {
  value = hcp_vm.web.id
}

output "vm_state" {
  value = hcp_vm.web.state
}

output "vm_power" {
  value = hcp_vm.web.power
}

output "vm_zone" {
  value = hcp_vm.web.zone
}

output "vm_vcpus" {
  value = hcp_vm.web.vcpus
}

output "images" {
  value = [for i in data.hcp_images.all.images : i.name]
}

output "flavors" {
  value = { for f in data.hcp_flavors.all.flavors : f.name => f.vcpus }
}

output "first_zone_cloud_init" {
  value = data.hcp_capabilities.first_zone.cloud_init
}
